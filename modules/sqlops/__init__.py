"""sqlops: raw SQL from the script (OpenSIPS 3.x's sqlops, its raw-query
part): ``sql_query(query[, res_col_avps[, db_id]])`` and
``sql_query_one(query[, res_col_vars[, db_id]])``, synchronous and as async
functions.

The async forms hand the DB API's ``AsyncQuery`` to the core's async
engine: the query's socket is polled by the receiver while it serves other
messages, and the route resumes when the rows are in (drivers with
``DB_CAP_ASYNC_RAW_QUERY``, today ``db_postgres``).  With a driver that
cannot (``db_sqlite``) the query runs at once and the resume route follows
straight away, as OpenSIPS falls back to a synchronous run.

Each process opens its own connection (on first use); the URLs are checked
(their driver bound) in mod_init.
"""
from __future__ import annotations

from opensipy import db, log
from opensipy.async_engine import ASYNC_CONTINUE
from opensipy.pvar import NULL_TEXT, PVError, parse_pv
from opensipy.sr_module import (ALL_ROUTES, BRANCH_ROUTE, CMD_PARAM_INT,
                                CMD_PARAM_NO_EXPAND, CMD_PARAM_OPT,
                                CMD_PARAM_STR, FAILURE_ROUTE, LOCAL_ROUTE,
                                ONREPLY_ROUTE, REQUEST_ROUTE, STR_PARAM,
                                USE_FUNC_PARAM, CmdExport, CmdParam,
                                ModuleExports, ParamExport)

_urls = {}                   # db_id -> URL (modparam db_url, may repeat)
_dbf = {}                    # db_id -> DbFunc (mod_init)
_cons = {}                   # db_id -> DbCon of this process


def param_db_url(value) -> int:
    """``db_url`` = "[id ]url" (id an integer, default 0)."""
    text = str(value).strip()
    first, sep, rest = text.partition(" ")
    if sep and first.isdigit():
        i, url = int(first), rest.strip()
    else:
        i, url = 0, text
    if not url:
        raise ValueError(f"db_url {value!r} has no URL")
    if i in _urls:
        raise ValueError(f"db_url {i} is set twice")
    _urls[i] = url
    return 0


def fixup_vars(text):
    """``"$avp(a);$avp(b)"``: the variables receiving the columns."""
    specs = []
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            sp = parse_pv(part)
        except PVError as e:
            raise ValueError(f"bad variable {part!r}: {e}") from None
        if not sp.writable:
            raise ValueError(f"variable {part} is read-only")
        specs.append(sp)
    if not specs:
        raise ValueError("no variable given")
    return specs


def fixup_avps(text):
    specs = fixup_vars(text)
    for sp in specs:
        if sp.name != "avp":
            raise ValueError(f"{sp.text} is not an $avp")
    return specs


def _con(db_id):
    i = 0 if db_id is None else int(db_id)
    con = _cons.get(i)
    if con is None:
        dbf = _dbf.get(i)
        if dbf is None:
            raise db.DBError(f"no db_url with id {i}")
        con = _cons[i] = dbf.init(_urls[i])
    return con


def _default_avps(n):
    return [parse_pv(f"$avp({k})") for k in range(1, n + 1)]


def _store_avps(msg, res, specs) -> int:
    if res is None:
        return 1                 # a statement without rows (DELETE ...)
    if not res.rows:
        return -2
    specs = specs or _default_avps(len(res.columns))
    if len(specs) < len(res.columns):
        log.LM_WARN(f"sqlops: {len(res.columns)} columns but "
                    f"{len(specs)} AVPs: the last columns are dropped")
    for row in res.rows:
        for sp, v in zip(specs, row):
            sp.set(msg, NULL_TEXT if v is None else _val(v), "=")
    return 1


def _store_one(msg, res, specs) -> int:
    if res is None:
        return 1
    if not res.rows:
        return -2
    specs = specs or _default_avps(len(res.columns))
    if len(specs) != len(res.columns):
        log.LM_ERR(f"sqlops: the query gives {len(res.columns)} columns "
                   f"but {len(specs)} variables were given")
        return -1
    for sp, v in zip(specs, res.rows[0]):
        sp.set(msg, None if v is None else _val(v), "=")
    return 1


def _val(v):
    if isinstance(v, (int, str)) and not isinstance(v, bool):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return str(v)


def _run(msg, query, specs, db_id, store) -> int:
    try:
        res = _con(db_id).raw_query(query)
    except db.DBError as e:
        log.LM_ERR(f"sqlops: query failed: {e}")
        return -1
    try:
        return store(msg, res, specs)
    except PVError as e:
        log.LM_ERR(f"sqlops: cannot store the result: {e}")
        return -1


def w_sql_query(msg, query, specs=None, db_id=None) -> int:
    return _run(msg, query, specs, db_id, _store_avps)


def w_sql_query_one(msg, query, specs=None, db_id=None) -> int:
    return _run(msg, query, specs, db_id, _store_one)


def _async(msg, actx, query, specs, db_id, store) -> int:
    try:
        con = _con(db_id)
    except db.DBError as e:
        log.LM_ERR(f"sqlops: {e}")
        return -1
    if not db.db_capability(con.dbf, db.DB_CAP_ASYNC_RAW_QUERY):
        return _run(msg, query, specs, db_id, store)     # at once
    try:
        aq = con.async_raw_query(query)
    except db.DBError as e:
        log.LM_ERR(f"sqlops: query failed: {e}")
        return -1
    actx.fd = aq.fd
    actx.resume_param = (aq, specs, store)
    actx.resume_f = _resume
    actx.timeout_f = _cancel
    return 1


def _resume(msg, param) -> int:
    aq, specs, store = param
    try:
        res = aq.resume()
    except db.DBError as e:
        log.LM_ERR(f"sqlops: query failed: {e}")
        return -1
    if res is None and not aq.done:
        return ASYNC_CONTINUE
    try:
        return store(msg, res, specs)
    except PVError as e:
        log.LM_ERR(f"sqlops: cannot store the result: {e}")
        return -1


def _cancel(msg, param) -> None:
    param[0].cancel()


def a_sql_query(msg, actx, query, specs=None, db_id=None) -> int:
    return _async(msg, actx, query, specs, db_id, _store_avps)


def a_sql_query_one(msg, actx, query, specs=None, db_id=None) -> int:
    return _async(msg, actx, query, specs, db_id, _store_one)


def mod_init() -> int:
    if not _urls:
        log.LM_ERR("sqlops: no db_url set")
        return -1
    for i, url in _urls.items():
        try:
            _dbf[i] = db.db_bind_mod(url, needed_by="sqlops")
        except db.DBError as e:
            log.LM_ERR(f"sqlops: db_url {i}: {e}")
            return -1
    return 0


def child_init(rank: int) -> int:
    _cons.clear()            # never a connection carried across fork
    return 0


QUERY_ROUTES = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | LOCAL_ROUTE \
    | ONREPLY_ROUTE


def _params(fix):
    return [CmdParam(CMD_PARAM_STR),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_EXPAND | CMD_PARAM_OPT,
                     fixup=fix),
            CmdParam(CMD_PARAM_INT | CMD_PARAM_OPT)]


exports = ModuleExports(
    name="sqlops",
    cmds=[
        CmdExport("sql_query", w_sql_query, _params(fixup_avps),
                  QUERY_ROUTES),
        CmdExport("sql_query_one", w_sql_query_one, _params(fixup_vars),
                  ALL_ROUTES),
    ],
    acmds=[
        CmdExport("sql_query", a_sql_query, _params(fixup_avps),
                  QUERY_ROUTES),
        CmdExport("sql_query_one", a_sql_query_one, _params(fixup_vars),
                  ALL_ROUTES),
    ],
    params=[ParamExport("db_url", STR_PARAM | USE_FUNC_PARAM,
                        param_db_url)],
    init_f=mod_init,
    init_child_f=child_init,
)
