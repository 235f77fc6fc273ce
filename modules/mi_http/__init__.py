"""mi_http: the MI over HTTP, as JSON-RPC 2.0 POSTed to ``/<mi_http_root>``
of the httpd module's server.  See README.md.
"""
from __future__ import annotations

from opensipy import mi, modloader
from opensipy.sr_module import (DEP_ABORT, STR_PARAM, DepExport, ModuleDep,
                                ModuleExports, ParamExport)

# ---- parameters
mi_http_root = "mi"

_JSON = "application/json"
_api = None


def handle(method, path, query, headers, body):
    HttpReply = _api.HttpReply
    if path.strip("/") != mi_http_root.strip("/"):
        return HttpReply(404, "text/plain; charset=utf-8", b"Not Found\n")
    if method != "POST":
        return HttpReply(405, "text/plain; charset=utf-8",
                         b"MI requests are POSTed JSON-RPC 2.0\n")
    text = mi.handle_text(body)
    reply = HttpReply(200, _JSON, b"", mi.run_after_reply)
    if text is None:            # a notification: nothing to answer
        reply.status = 204
    else:
        reply.body = text.encode("utf-8")
    return reply


def mod_init() -> int:
    global _api
    api = _api = modloader.load_api("httpd", "mi_http")
    api.register_httpdcb("mi_http", mi_http_root, handle,
                         init_proc=mi.init_child)
    return 0


exports = ModuleExports(
    name="mi_http",
    deps=DepExport(md=[ModuleDep("httpd", DEP_ABORT)]),
    params=[ParamExport("mi_http_root", STR_PARAM, "mi_http_root")],
    init_f=mod_init,
)
