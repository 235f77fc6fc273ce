"""proto_udp: the UDP transport, as in OpenSIPS.

Loading this module enables ``socket=udp:...`` listeners; the sockets and the
receive loop themselves live in the core (:mod:`opensipy.net.udp`), which
opens every UDP socket before forking and runs ``udp_workers`` receivers on
each.  ``udp_port`` is the port of a UDP socket declared without one.
"""
from opensipy.sr_module import INT_PARAM, ModuleExports, ParamExport

udp_port = 5060


def mod_init() -> int:
    if not 0 < udp_port < 65536:
        raise ValueError(f"udp_port {udp_port} is not a port number")
    return 0


exports = ModuleExports(
    name="proto_udp",
    params=[ParamExport("udp_port", INT_PARAM, "udp_port")],
    init_f=mod_init,
)
