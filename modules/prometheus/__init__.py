"""prometheus: the statistics in Prometheus's text exposition format, served
by the httpd module at ``/<root>`` (``/metrics``).

OpenSIPS 3.x's parameters (``root``, ``prefix``, ``group_prefix``,
``delimiter``, ``group_label``, ``group_mode``, ``statistics``, ``labels``)
keep their meaning.  Beyond OpenSIPS, every sample carries the label
``module`` (the module owning the statistic's group, ``core`` for the core
groups), the per-process ``pkmem`` figures carry ``process``/``rank``/``pid``
labels instead of a process id inside the name, and, with ``extra_metrics``,
each process's resident size and CPU time and each module's shared-memory
usage are exported.  See README.md.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from opensipy import log, modloader, pt, statistics
from opensipy.sr_module import (DEP_ABORT, INT_PARAM, STAT_IS_FUNC,
                                STAT_NO_RESET, STR_PARAM, USE_FUNC_PARAM,
                                DepExport, ModuleDep, ModuleExports,
                                ParamExport)

# ---- parameters
root = "metrics"
prefix = "opensips"
group_prefix = ""
delimiter = "_"
group_label = "group"
group_mode = 0
extra_metrics = 1

_stat_names: List[str] = []        # "group:name", "group:" or "all"
_label_rules: List[Tuple[str, "re.Pattern", str, int]] = []

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABELS_OK = re.compile(
    r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*=\s*"(?:[^"\\\n]|\\.)*"'
    r'(?:\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*=\s*"(?:[^"\\\n]|\\.)*")*\s*$')
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_api = None


def set_statistics(value) -> int:
    """``statistics``: names separated by spaces; ``group:`` is a whole
    group, ``all`` every statistic.  May be given many times."""
    # a bare name (no colon) is looked up in every group on each scrape
    _stat_names.extend(str(value).split())
    return 0


def set_labels(value) -> int:
    """``labels``: ``group: /regex/subst/flags``; the substitution must give
    ``name:labels``.  May be given many times; the first match wins."""
    text = str(value)
    group, sep, rule = text.partition(":")
    group, rule = group.strip(), rule.strip()
    if not sep or not group or len(rule) < 3:
        raise ValueError(f"prometheus: bad labels rule '{text}' (expected "
                         f"'group: /regex/subst/flags')")
    d = rule[0]
    parts = _split_rule(rule[1:], d)
    if parts is None:
        raise ValueError(f"prometheus: bad labels rule '{text}' (expected "
                         f"'group: /regex/subst/flags')")
    pattern, subst, flags = parts
    reflags, count = 0, 1
    for f in flags:
        if f == "i":
            reflags |= re.I
        elif f == "g":
            count = 0
        else:
            raise ValueError(f"prometheus: unknown flag '{f}' in labels "
                             f"rule '{text}'")
    try:
        rx = re.compile(pattern, reflags)
    except re.error as e:
        raise ValueError(f"prometheus: bad regular expression in labels "
                         f"rule '{text}': {e}") from None
    _label_rules.append((group, rx, subst, count))
    return 0


def _split_rule(s: str, d: str):
    """'re/subst/flags' (after the first delimiter) -> 3 parts; a
    backslash escapes the delimiter."""
    out, cur, i = [], [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s) and s[i + 1] == d:
            cur.append(d)
            i += 2
            continue
        if ch == d and len(out) < 2:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out if len(out) == 3 else None


# ------------------------------------------------------------- rendering

def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n") \
        .replace('"', '\\"')


def _metric_name(*parts: str) -> str:
    name = delimiter.join(p for p in parts if p)
    name = _NAME_BAD.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


class _Families:
    """Samples grouped by metric name, each family written once."""

    def __init__(self):
        self.fams: Dict[str, Tuple[str, str, List[str]]] = {}

    def add(self, name: str, kind: str, help_: str, labels: str,
            value) -> None:
        fam = self.fams.get(name)
        if fam is None:
            fam = self.fams[name] = (kind, help_, [])
        sample = f"{name}{{{labels}}} {value}" if labels else \
            f"{name} {value}"
        fam[2].append(sample)

    def text(self) -> str:
        out = []
        for name, (kind, help_, samples) in self.fams.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _labels(d: Dict[str, object], raw: str = "") -> str:
    parts = [f'{k}="{_esc(v)}"' for k, v in d.items()]
    if raw:
        parts.append(raw.strip())
    return ",".join(parts)


def _wanted() -> List[Tuple[str, str]]:
    """(group, name) of every statistic asked for, in order, once each."""
    seen = set()
    out = []

    def add(g, n):
        if (g, n) not in seen:
            seen.add((g, n))
            out.append((g, n))
    for full in _stat_names:
        if full == "all":
            for g in statistics.list_groups():
                for n in statistics.list_stats(g):
                    add(g, n)
            continue
        g, sep, n = full.partition(":")
        if not sep:        # a bare name: every group that has it
            for grp in statistics.list_groups():
                for sn in statistics.list_stats(grp):
                    if sn.lower() == full.lower():
                        add(grp, sn)
            continue
        if not n:
            for sn in statistics.list_stats(g):
                add(g, sn)
        else:
            add(g, n)
    return out


def _owner(group: str, modules) -> str:
    return group if group in modules else "core"


def _apply_rules(group: str, name: str) -> Optional[Tuple[str, str]]:
    for g, rx, subst, count in _label_rules:
        if g != group or not rx.search(name):
            continue
        try:
            res = rx.sub(subst, name, count=count)
        except (re.error, IndexError):
            continue
        new, sep, raw = res.partition(":")
        if not sep or not new or (raw and not _LABELS_OK.match(raw)):
            continue
        return new, raw
    return None


def render() -> str:
    fams = _Families()
    modules = {lm.name for lm in modloader.registry.modules} \
        if modloader.registry is not None else set()
    procs = {e.id: e for e in pt.entries()}
    for group, name in _wanted():
        full = f"{group}:{name}"
        st = statistics.get_stat(full)
        if st is None:
            continue
        try:
            value = st.get()
        except Exception as e:
            log.LM_DBG(f"prometheus: cannot read {full}: {e}")
            continue
        kind = "gauge" if st.flags & (STAT_IS_FUNC | STAT_NO_RESET) \
            else "counter"
        labels = {}
        raw = ""
        sname = name
        gname = group_prefix + group
        rule = _apply_rules(group, name)
        if rule is not None:
            sname, raw = rule
        elif group == "pkmem":
            # "<process id>-real_used_size": the process becomes labels
            pid_id, dash, rest = name.partition("-")
            if dash and pid_id.isdigit():
                # shmem has a real_used_size too: keep the group in the
                # name unless group_mode 1 puts it there anyway
                sname = rest if group_mode == 1 else f"pkmem_{rest}"
                e = procs.get(int(pid_id))
                labels["process"] = e.type if e else pid_id
                if e is not None:
                    labels["rank"] = e.rank
                    labels["pid"] = e.pid
        if group_mode == 1:
            metric = _metric_name(prefix, gname, sname)
        else:
            metric = _metric_name(prefix, sname)
        all_labels = {}
        if group_mode == 2:
            all_labels[group_label] = gname
        all_labels["module"] = _owner(group, modules)
        all_labels.update(labels)
        help_ = f"statistic {full}"
        if "pid" in labels:
            help_ = f"statistic pkmem:<process id>-{name.partition('-')[2]}" \
                    f", one sample per process"
        fams.add(metric, kind, help_, _labels(all_labels, raw), value)
    if extra_metrics:
        _process_metrics(fams)
        _shm_metrics(fams)
    return fams.text()


def _process_metrics(fams: _Families) -> None:
    try:
        import psutil
    except ImportError:
        return
    for e in pt.entries():
        try:
            p = psutil.Process(e.pid)
            with p.oneshot():
                rss = p.memory_info().rss
                ct = p.cpu_times()
        except Exception:      # gone, or not ours to read
            continue
        lab = _labels({"process": e.type, "rank": e.rank, "pid": e.pid})
        fams.add(_metric_name(prefix, "process_resident_memory_bytes"),
                 "gauge", "resident memory of the process, in bytes", lab,
                 rss)
        fams.add(_metric_name(prefix, "process_cpu_seconds_total"),
                 "counter", "user and system CPU time of the process, in "
                 "seconds", lab, round(ct.user + ct.system, 3))


def _shm_metrics(fams: _Families) -> None:
    from opensipy import shm
    try:
        usage = shm.module_usage()
    except Exception as e:
        log.LM_DBG(f"prometheus: cannot read shm usage: {e}")
        return
    for mod, used in usage.items():
        fams.add(_metric_name(prefix, "shm_module_used_bytes"), "gauge",
                 "shared memory held by the module, in bytes",
                 _labels({"module": mod}), used)


def handle(method, path, query, headers, body):
    HttpReply = _api.HttpReply
    if path.strip("/") != root.strip("/"):
        return HttpReply(404, "text/plain; charset=utf-8", b"Not Found\n")
    if method not in ("GET", "HEAD"):
        return HttpReply(405, "text/plain; charset=utf-8",
                         b"metrics are read with GET\n")
    return HttpReply(200, CONTENT_TYPE, render().encode("utf-8"))


def mod_init() -> int:
    global _api
    if group_mode not in (0, 1, 2):
        raise ValueError(f"prometheus: group_mode must be 0, 1 or 2 "
                         f"(got {group_mode})")
    if not _LABEL_NAME.match(group_label or ""):
        raise ValueError(f"prometheus: bad group_label '{group_label}'")
    if not root.strip("/") or "/" in root.strip("/"):
        raise ValueError(f"prometheus: bad root '{root}'")
    if not _stat_names:
        log.LM_WARN("prometheus: no statistics parameter: only the "
                    "process and shm figures are exported")
    for full in _stat_names:
        if full == "all" or ":" not in full:
            continue
        g, _, n = full.partition(":")
        if g not in statistics.list_groups():
            # a module may register its group later in mod_init order;
            # unknown names are skipped at scrape time, as OpenSIPS does
            log.LM_DBG(f"prometheus: statistics group '{g}' unknown at "
                       f"init")
    api = _api = modloader.load_api("httpd", "prometheus")
    api.register_httpdcb("prometheus", root, handle)
    return 0


exports = ModuleExports(
    name="prometheus",
    deps=DepExport(md=[ModuleDep("httpd", DEP_ABORT)]),
    params=[
        ParamExport("root", STR_PARAM, "root"),
        ParamExport("prefix", STR_PARAM, "prefix"),
        ParamExport("group_prefix", STR_PARAM, "group_prefix"),
        ParamExport("delimiter", STR_PARAM, "delimiter"),
        ParamExport("group_label", STR_PARAM, "group_label"),
        ParamExport("group_mode", INT_PARAM, "group_mode"),
        ParamExport("statistics", STR_PARAM | USE_FUNC_PARAM, set_statistics),
        ParamExport("labels", STR_PARAM | USE_FUNC_PARAM, set_labels),
        ParamExport("extra_metrics", INT_PARAM, "extra_metrics"),
    ],
    init_f=mod_init,
)
