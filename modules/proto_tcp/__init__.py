"""proto_tcp: the TCP transport, as in OpenSIPS.

Loading this module enables ``socket=tcp:...`` listeners.  The processes
and the connection table live in the core (:mod:`opensipy.net.tcp`): the
attendant opens the listening sockets, forks the TCP main process and
``tcp_workers`` TCP workers; this module holds the transport's parameters,
its statistics and the MI command ``list_tcp_conns``.
"""
from opensipy.net import tcp
from opensipy.sr_module import (INT_PARAM, STAT_IS_FUNC, STAT_NO_RESET,
                                MIExport, MIRecipe, ModuleExports,
                                ParamExport, StatExport)

tcp_port = 5060
tcp_send_timeout = 100          # ms
tcp_crlf_pingpong = 1
tcp_max_msg_size = 65535

opened_conns = closed_conns = refused_conns = send_timeouts = None


def _current_conns():
    return tcp.table.count() if tcp.table is not None else 0


def mod_init() -> int:
    if not 0 < tcp_port < 65536:
        raise ValueError(f"tcp_port {tcp_port} is not a port number")
    if tcp_send_timeout <= 0:
        raise ValueError("tcp_send_timeout must be positive (ms)")
    if not 1024 <= tcp_max_msg_size <= 16 * 1024 * 1024:
        raise ValueError("tcp_max_msg_size must be 1024 .. 16777216")
    tcp.send_timeout_ms = tcp_send_timeout
    tcp.crlf_pingpong = bool(tcp_crlf_pingpong)
    tcp.max_msg_size = tcp_max_msg_size
    tcp.stats = {"opened_conns": opened_conns, "closed_conns": closed_conns,
                 "refused_conns": refused_conns,
                 "send_timeouts": send_timeouts}
    return 0


def mi_list_tcp_conns(params):
    """MI ``list_tcp_conns``: one object per connection (ID, Type, State,
    Remote, Local, Lifetime, Alias port), as OpenSIPS answers."""
    return tcp.list_conns()


exports = ModuleExports(
    name="proto_tcp",
    params=[ParamExport("tcp_port", INT_PARAM, "tcp_port"),
            ParamExport("tcp_send_timeout", INT_PARAM, "tcp_send_timeout"),
            ParamExport("tcp_crlf_pingpong", INT_PARAM, "tcp_crlf_pingpong"),
            ParamExport("tcp_max_msg_size", INT_PARAM, "tcp_max_msg_size")],
    stats=[StatExport("opened_conns", 0, "opened_conns"),
           StatExport("closed_conns", 0, "closed_conns"),
           StatExport("refused_conns", 0, "refused_conns"),
           StatExport("send_timeouts", 0, "send_timeouts"),
           StatExport("current_conns", STAT_IS_FUNC | STAT_NO_RESET,
                      _current_conns)],
    mi_cmds=[MIExport("list_tcp_conns", "lists the open TCP connections", 0,
                      None, [MIRecipe(mi_list_tcp_conns, ())])],
    init_f=mod_init,
)
