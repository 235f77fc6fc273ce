"""rr over real parsed requests: record_route's header, its params before and
after, loose_route's RFC 3261 cases (ours removed, next loose hop in $du,
strict next hop, strict previous hop, preloaded, double RR), check_route_param,
is_direction, $rr_params."""
import re

import pytest

from opensipy import config
from opensipy.parser import SipMsg

import modkit
import opensipy_modules.rr as rr

US = "127.0.0.1:5060"


@pytest.fixture(autouse=True)
def our_socket():
    config.reset()
    si = config.SocketInfo("udp", "127.0.0.1", 5060)
    config.settings.socket.append(si)
    saved = (rr.append_fromtag, rr.enable_double_rr, rr.add_username)
    yield si
    rr.append_fromtag, rr.enable_double_rr, rr.add_username = saved
    config.reset()


def parse(buf, si):
    return modkit.parse(buf, si=si)


def out(m) -> SipMsg:
    return SipMsg(m.build())


def test_record_route_on_top_with_lr_and_ftag(our_socket):
    m = parse(modkit.request(extra=["Record-Route: <sip:10.0.0.1;lr>"]),
              our_socket)
    assert rr.record_route(m) == 1
    o = out(m)
    assert o.hdrs("Record-Route") == [f"<sip:{US};lr;ftag=ftag1>",
                                      "<sip:10.0.0.1;lr>"]


def test_record_route_twice_is_an_error(our_socket):
    m = parse(modkit.request(), our_socket)
    assert rr.record_route(m) == 1
    assert rr.record_route(m) < 0
    assert len(out(m).hdrs("Record-Route")) == 1


def test_params_before_and_after_record_route(our_socket):
    m = parse(modkit.request(), our_socket)
    assert rr.add_rr_param(m, ";a=1") == 1
    assert rr.record_route(m, ";b=2") == 1
    # a change made after record_route() must survive the param added later
    m.append_hdr("X-After: yes")
    assert rr.add_rr_param(m, ";c=3") == 1
    o = out(m)
    assert o.hdrs("Record-Route") == [f"<sip:{US};lr;ftag=ftag1;a=1;b=2;c=3>"]
    assert o.hdr("X-After") == "yes"


def test_bad_params_are_refused(our_socket):
    m = parse(modkit.request(), our_socket)
    assert rr.add_rr_param(m, "noseparator") < 0
    assert rr.add_rr_param(m, ";x=1\r\nInjected: yes") < 0
    with pytest.raises(ValueError):
        rr._fixup_rr_param("x=1")


def test_append_fromtag_off_and_add_username(our_socket):
    rr.append_fromtag = 0
    rr.add_username = 1
    m = parse(modkit.request(ruri="sip:bob@example.com"), our_socket)
    rr.record_route(m)
    assert out(m).hdr("Record-Route") == f"<sip:bob@{US};lr>"


def test_advertised_address_is_recorded(our_socket):
    our_socket.adv_host, our_socket.adv_port = "198.51.100.7", 5099
    m = parse(modkit.request(), our_socket)
    rr.record_route(m)
    assert out(m).hdr("Record-Route") == \
        "<sip:198.51.100.7:5099;lr;ftag=ftag1>"


def test_double_rr_with_a_forced_socket(our_socket):
    other = config.SocketInfo("udp", "127.0.0.2", 5070)
    config.settings.socket.append(other)
    m = parse(modkit.request(), our_socket)
    m.force_send_socket = other
    rr.record_route(m)
    assert out(m).hdrs("Record-Route") == [
        "<sip:127.0.0.2:5070;r2=on;lr;ftag=ftag1>",
        f"<sip:{US};r2=on;lr;ftag=ftag1>"]
    # the in-dialog request comes back with both: both go
    back = parse(modkit.request(
        method="BYE", ruri="sip:alice@192.0.2.1:5062", to_tag="tt",
        extra=[f"Route: <sip:{US};r2=on;lr;ftag=ftag1>,"
               "<sip:127.0.0.2:5070;r2=on;lr;ftag=ftag1>",
               "Route: <sip:192.0.2.99;lr>"]), our_socket)
    assert rr.loose_route(back) == 1
    assert back.dst_uri == "sip:192.0.2.99;lr"
    assert out(back).hdrs("Route") == ["<sip:192.0.2.99;lr>"]
    assert back.force_send_socket is other


def test_no_route_header_is_not_rr_driven(our_socket):
    m = parse(modkit.request(), our_socket)
    assert rr.loose_route(m) == -1
    assert m.dst_uri is None


def test_loose_route_removes_ours_and_sets_du_to_the_next(our_socket):
    m = parse(modkit.request(
        method="BYE", ruri="sip:bob@192.0.2.50:5080", to_tag="tt",
        extra=[f"Route: <sip:{US};lr;ftag=ftag1;nat=yes>, "
               "<sip:edge.example.net;lr>"]), our_socket)
    assert rr.loose_route(m) == 1
    assert m.dst_uri == "sip:edge.example.net;lr"
    assert m.new_uri is None
    assert out(m).hdrs("Route") == ["<sip:edge.example.net;lr>"]
    assert rr.pv_get_rr_params(m, None) == "lr;ftag=ftag1;nat=yes"
    assert rr.check_route_param(m, re.compile("nat=yes")) == 1
    assert rr.check_route_param(m, re.compile("nat=no")) == -1


def test_only_our_route_in_dialog_routes_on_the_ruri(our_socket):
    m = parse(modkit.request(method="BYE", ruri="sip:bob@192.0.2.50:5080",
                             to_tag="tt",
                             extra=[f"Route: <sip:{US};lr;ftag=ftag1>"]),
              our_socket)
    assert rr.loose_route(m) == 1
    assert m.dst_uri is None
    assert out(m).hdrs("Route") == []


def test_preloaded_route_naming_only_us_is_removed_and_false(our_socket):
    m = parse(modkit.request(extra=[f"Route: <sip:{US};lr>"]), our_socket)
    assert rr.loose_route(m) == -1
    assert out(m).hdrs("Route") == []


def test_first_route_not_ours_is_the_next_hop(our_socket):
    m = parse(modkit.request(extra=["Route: <sip:198.51.100.1;lr>"]),
              our_socket)
    assert rr.loose_route(m) == 1
    assert m.dst_uri == "sip:198.51.100.1;lr"
    assert out(m).hdrs("Route") == ["<sip:198.51.100.1;lr>"]


def test_strict_next_hop_gets_the_request_uri(our_socket):
    m = parse(modkit.request(
        method="BYE", ruri="sip:bob@192.0.2.50", to_tag="tt",
        extra=[f"Route: <sip:{US};lr>",
               "Route: <sip:strict.example.net>, <sip:last.example.net;lr>"]),
        our_socket)
    assert rr.loose_route(m) == 1
    o = out(m)
    assert o.ruri == "sip:strict.example.net"
    assert o.hdrs("Route") == ["<sip:last.example.net;lr>",
                               "<sip:bob@192.0.2.50>"]


def test_strict_previous_hop_gets_the_ruri_back_from_the_last_route(
        our_socket):
    # a strict router before us put our Record-Route URI in the R-URI
    m = parse(modkit.request(
        method="BYE", ruri=f"sip:{US};lr;ftag=ftag1;nat=yes", to_tag="tt",
        extra=["Route: <sip:next.example.net;lr>",
               "Route: <sip:bob@192.0.2.50:5080>"]), our_socket)
    assert rr.loose_route(m) == 1
    assert m.new_uri == "sip:bob@192.0.2.50:5080"
    assert m.dst_uri == "sip:next.example.net;lr"
    o = out(m)
    assert o.ruri == "sip:bob@192.0.2.50:5080"
    assert o.hdrs("Route") == ["<sip:next.example.net;lr>"]
    assert rr.get_route_param(m, "nat") == "yes"


def test_is_direction(our_socket):
    down = parse(modkit.request(
        method="BYE", to_tag="tt", from_tag="caller",
        extra=[f"Route: <sip:{US};lr;ftag=caller>"]), our_socket)
    rr.loose_route(down)
    assert rr.is_direction(down, "downstream") == 1
    assert rr.is_direction(down, "upstream") == -1
    up = parse(modkit.request(
        method="BYE", to_tag="caller", from_tag="callee",
        extra=[f"Route: <sip:{US};lr;ftag=caller>"]), our_socket)
    rr.loose_route(up)
    assert rr.is_direction(up, "upstream") == 1
    with pytest.raises(ValueError):
        rr._fixup_direction("sideways")


def test_rr_callbacks_see_our_route_params(our_socket):
    seen = []
    rr.register_rrcb(lambda msg, params, p: seen.append((params, p)), "P")
    try:
        m = parse(modkit.request(method="BYE", to_tag="tt", extra=[
            f"Route: <sip:{US};lr;did=abc>"]), our_socket)
        rr.loose_route(m)
        assert seen == [("lr;did=abc", "P")]
    finally:
        rr._rrcbs.clear()


@pytest.mark.slow
def test_dialog_is_record_routed_and_loose_routed_on_the_wire(server):
    from server import free_port
    port = free_port()
    uac, uas = modkit.Peer(), modkit.Peer()
    try:
        server.start(f"""
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "rr.so"
route {{
    if (has_totag()) {{
        if (loose_route()) {{
            append_hf("X-RR: $rr_params\\r\\n");
            if (is_direction("upstream"))
                append_hf("X-Dir: upstream\\r\\n");
            forward();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
    record_route(";nat=yes");
    forward();
}}
""")
        inv = modkit.request(ruri=f"sip:bob@127.0.0.1:{uas.port}",
                             via_port=uac.port, from_tag="caller")
        uac.send(inv, port)
        got = uas.recv()
        rr_hdr = got.hdrs("Record-Route")
        assert rr_hdr == [f"<sip:127.0.0.1:{port};lr;ftag=caller;nat=yes>"]
        # the callee hangs up: BYE to the caller's contact, via our Route
        bye = modkit.request(
            method="BYE", ruri=f"sip:alice@127.0.0.1:{uac.port}",
            via_port=uas.port, from_tag="callee", to_tag="caller",
            extra=[f"Route: {rr_hdr[0]}"], cseq=2)
        uas.send(bye, port)
        got = uac.recv()
        assert got.method == "BYE"
        assert got.hdrs("Route") == []
        assert got.hdr("X-RR") == "lr;ftag=caller;nat=yes"
        assert got.hdr("X-Dir") == "upstream"
        # an in-dialog request without a Route of ours is refused
        stray = modkit.request(method="BYE", ruri="sip:x@127.0.0.1",
                               via_port=uas.port, to_tag="t2", cseq=3)
        uas.send(stray, port)
        assert uas.recv().status == 404
    finally:
        uac.close()
        uas.close()
