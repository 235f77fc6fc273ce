"""sl: stateless replies on the wire (a real UDP socket pair), the To tag,
queued reply headers, sl_reply_error over the recorded error, the ACK filter
and the statistics in shared memory (end to end: test_replies_e2e.py)."""
import re
import zlib

import pytest

from opensipy import error, receive, shm
from opensipy.parser import SipMsg

import modkit
import opensipy_modules.sl as sl
from opensipy_modules.sl import sl_funcs


@pytest.fixture
def slmod(stats_registry, srv_sock):
    """sl as the core loads it: statistics registered and bound, mod_init
    run (with the server's socket configured)."""
    from opensipy import config
    config.settings.sockets.append(srv_sock)
    created = stats_registry.register_module_stats("sl", sl.exports.stats)
    saved = {se.stat_pointer: getattr(sl, se.stat_pointer)
             for se in sl.exports.stats}
    for se in sl.exports.stats:
        setattr(sl, se.stat_pointer, created[se.name])
    assert sl.mod_init() == 0
    yield created
    for k, v in saved.items():
        setattr(sl, k, v)
    sl.enable_stats = 1
    sl._bind_stats()


def req(peer, srv_sock, **kw):
    return modkit.parse(modkit.request(via_port=peer.port, **kw),
                        ("127.0.0.1", peer.port), srv_sock)


def counts(created):
    return {n: s.get() for n, s in created.items()}


def test_reply_on_the_wire_with_sl_totag(slmod, peer, srv_sock):
    msg = req(peer, srv_sock)
    assert sl.w_sl_send_reply(msg, 404, "Not Here") == 1
    r = peer.recv()
    assert (r.status, r.reason) == (404, "Not Here")
    assert r.callid == msg.callid and r.cseq.num == 1
    assert r.via1.branch == msg.via1.branch
    assert r.from_.tag == "ftag1"
    tag = r.to.tag
    assert sl_funcs.is_sl_totag(tag)
    # the documented shape: 32 hex digits of the server, '-', 8 hex digits
    # of CRC-32 over Call-ID|From tag|CSeq number|Via sent-by|Via branch
    # (computed here from the reply on the wire, not by sl)
    prefix, _, suffix = tag.partition("-")
    assert re.fullmatch("[0-9a-f]{32}", prefix)
    v = r.via1
    key = f"{r.callid}|{r.from_.tag}|{r.cseq.num}|{v.host}:{v.port}|{v.branch}"
    assert suffix == format(zlib.crc32(key.encode()), "08x")
    # a retransmission gets the same tag, another request another one
    again = modkit.parse(msg.raw, ("127.0.0.1", peer.port), srv_sock)
    assert sl.w_sl_send_reply(again, 404, "Not Here") == 1
    assert peer.recv().to.tag == tag
    other = req(peer, srv_sock, callid="call-2@example.com")
    assert sl.w_sl_send_reply(other, 404, "Not Here") == 1
    assert peer.recv().to.tag != tag


def test_100_gets_no_tag_and_an_existing_tag_is_kept(slmod, peer, srv_sock):
    msg = req(peer, srv_sock)
    assert sl.w_sl_send_reply(msg, 100, "Trying") == 1
    assert peer.recv().to.tag is None
    msg = req(peer, srv_sock, to_tag="theirs")
    assert sl.w_sl_send_reply(msg, 486, "Busy Here") == 1
    assert peer.recv().to.tag == "theirs"


def test_queued_reply_headers_are_sent(slmod, peer, srv_sock):
    msg = req(peer, srv_sock, method="OPTIONS")
    # the contract append_to_reply fills
    msg.reply_hdrs = ["Allow: INVITE, ACK\r\n", "X-Why: because\r\n"]
    assert sl.w_sl_send_reply(msg, 200, "OK") == 1
    r = peer.recv()
    assert r.hdr("Allow") == "INVITE, ACK" and r.hdr("X-Why") == "because"
    names = [h.name for h in r.headers]
    assert names.index("Allow") < names.index("X-Why")
    # the API adds its own headers after the queued ones
    api = sl.load_api()
    assert api.send_reply(msg, 200, "OK", ["X-Api: 1"]) == 1
    r = peer.recv()
    assert r.hdr("X-Api") == "1" and r.hdr("Allow") == "INVITE, ACK"


def test_3xx_lists_the_destination_set_as_contacts(slmod, peer, srv_sock):
    from opensipy import core_cmds
    msg = req(peer, srv_sock)
    msg.new_uri = "sip:bob@elsewhere.example.com"
    assert core_cmds.w_append_branch(msg, "sip:bob@third.example.com",
                                     "0.5") == 1
    assert sl.w_sl_send_reply(msg, 302, "Moved Temporarily") == 1
    r = peer.recv()
    assert r.hdrs("Contact") == ["<sip:bob@elsewhere.example.com>",
                                 "<sip:bob@third.example.com>;q=0.5"]


def test_statistics_count_per_class(slmod, peer, srv_sock):
    for code in (180, 200, 302, 404, 503, 603, 486):
        assert sl.w_sl_send_reply(req(peer, srv_sock), code, "X") == 1
        peer.recv()
    c = counts(slmod)
    assert c["1xx_replies"] == 1 and c["2xx_replies"] == 1
    assert c["3xx_replies"] == 1 and c["4xx_replies"] == 2
    assert c["5xx_replies"] == 1 and c["6xx_replies"] == 1
    assert c["sent_replies"] == 7 and c["sent_err_replies"] == 0


def test_enable_stats_0_counts_nothing(slmod, peer, srv_sock):
    sl.enable_stats = 0
    sl._bind_stats()
    assert sl.w_sl_send_reply(req(peer, srv_sock), 200, "OK") == 1
    peer.recv()
    assert set(counts(slmod).values()) == {0}


def test_no_reply_to_an_ack_or_a_reply_or_a_bad_code(slmod, peer,
                                                     srv_sock):
    ack = req(peer, srv_sock, method="ACK")
    assert sl.w_sl_send_reply(ack, 200, "OK") == 1      # OpenSIPS 3.x
    reply = SipMsg(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4"
                   b"bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-"
                   b"ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert sl_funcs.send_reply(reply, 200, "OK") == -1
    assert sl_funcs.send_reply(req(peer, srv_sock), 700, "No") == -1
    assert peer.nothing()
    assert counts(slmod)["sent_replies"] == 0
    with pytest.raises(ValueError):
        sl.fixup_code(99)


def test_a_request_without_receive_info_is_an_error(slmod, peer, srv_sock):
    msg = SipMsg(modkit.request(via_port=peer.port))
    assert sl.w_sl_send_reply(msg, 200, "OK") == -1


@pytest.mark.parametrize("code,status,reason", [
    (None, 500, "Server error occurred (1/SL)"),
    (error.E_SEND, 477, "Send failed (477/SL)"),
    (error.E_BAD_ADDRESS, 476, "Unresolvable destination (476/SL)"),
    (error.E_BAD_REQ, 400, "Bad Request (400/SL)"),
    (error.E_BAD_URI, 475, "Bad URI (475/SL)"),
    (error.E_BAD_TO, 400, "Bad To (13/SL)"),
    (error.E_OUT_OF_MEM, 500, "Server error occurred (2/SL)"),
])
def test_sl_reply_error_answers_the_recorded_error(slmod, peer, srv_sock,
                                                   code, status, reason):
    msg = req(peer, srv_sock)
    if code is not None:
        error.set_error(msg, code)
    assert sl.w_sl_reply_error(msg) == 1
    r = peer.recv()
    assert (r.status, r.reason) == (status, reason)
    c = counts(slmod)
    assert c["sent_err_replies"] == 1 and c["sent_replies"] == 1


def test_a_failed_forward_records_its_error(slmod, peer, srv_sock):
    from opensipy import forward
    msg = req(peer, srv_sock, ruri="sip:bob@no-such-host.invalid")
    assert forward.forward_request(msg) == -1
    assert msg.ser_error == error.E_BAD_ADDRESS
    msg = req(peer, srv_sock, ruri="tel:+123")
    assert forward.forward_request(msg) == -1
    assert msg.ser_error == error.E_BAD_URI
    assert sl.w_sl_reply_error(msg) == 1
    assert peer.recv().status == 475


def test_acks_to_sl_replies_are_absorbed_and_counted(slmod, peer, srv_sock):
    assert sl_funcs.filter_ack in receive._pre_script_cbs
    inv = req(peer, srv_sock)
    assert sl.w_sl_send_reply(inv, 486, "Busy Here") == 1
    tag = peer.recv().to.tag
    ack = req(peer, srv_sock, method="ACK", to_tag=tag,
              branch=inv.via1.branch)
    assert sl_funcs.filter_ack(ack) == 0
    # not ours: another tag, no tag, not an ACK
    assert sl_funcs.filter_ack(req(peer, srv_sock, method="ACK",
                                   to_tag="x" * 41)) == 1
    assert sl_funcs.filter_ack(req(peer, srv_sock, method="ACK")) == 1
    assert sl_funcs.filter_ack(req(peer, srv_sock, method="BYE",
                                   to_tag=tag)) == 1
    assert counts(slmod)["received_ACKs"] == 1


def test_the_ack_filter_stops_looking_after_the_wait_time(slmod, peer,
                                                         srv_sock):
    inv = req(peer, srv_sock)
    assert sl.w_sl_send_reply(inv, 404, "Not Found") == 1
    tag = peer.recv().to.tag
    sl_funcs._deadline.set(shm.now_ns() - 1)
    ack = req(peer, srv_sock, method="ACK", to_tag=tag)
    assert sl_funcs.filter_ack(ack) == 1
    assert counts(slmod)["received_ACKs"] == 0


def test_the_tag_prefix_is_per_server(slmod, srv_sock):
    from opensipy import config
    p1 = sl_funcs.tag_prefix()
    assert sl_funcs.init_tags(config.settings.sockets) == p1
    assert sl_funcs.init_tags(["udp:10.0.0.1:5060"]) != p1
    sl_funcs.init_tags(config.settings.sockets)


def test_the_ack_filter_is_armed_before_the_reply_leaves(slmod, peer,
                                                        srv_sock,
                                                        monkeypatch):
    """The phone may answer with the ACK (to another worker) before the
    sending process gets past sendto(): the deadline must already be set."""
    from opensipy import forward
    seen = []
    real = forward.send_reply

    def spy(msg, data):
        seen.append(sl_funcs._deadline.get() > shm.now_ns())
        return real(msg, data)
    monkeypatch.setattr(forward, "send_reply", spy)
    sl_funcs._deadline.set(0)
    sl_funcs._pushed[0] = -sl_funcs.DEADLINE_STEP_NS
    assert sl.w_sl_send_reply(req(peer, srv_sock), 404, "Not Found") == 1
    assert seen == [True]
    peer.recv()


def test_the_ack_filter_deadline_is_pushed_once_per_step(slmod, peer,
                                                        srv_sock,
                                                        monkeypatch):
    """A burst of replies writes the shared deadline once per
    DEADLINE_STEP_NS; a reply after the step pushes it again."""
    sl_funcs._deadline.set(0)
    sl_funcs._pushed[0] = -sl_funcs.DEADLINE_STEP_NS
    assert sl.w_sl_send_reply(req(peer, srv_sock), 404, "Not Found") == 1
    peer.recv()
    first = sl_funcs._deadline.get()
    assert first > shm.now_ns()
    assert sl.w_sl_send_reply(req(peer, srv_sock), 404, "Not Found") == 1
    peer.recv()
    assert sl_funcs._deadline.get() == first       # within the step
    # the step has passed for this process
    sl_funcs._pushed[0] -= sl_funcs.DEADLINE_STEP_NS
    assert sl.w_sl_send_reply(req(peer, srv_sock), 404, "Not Found") == 1
    peer.recv()
    assert sl_funcs._deadline.get() > first
