"""topology_hiding in dialog mode (the state on the dialog, the dialog id
in our Contact) through the real server with the dialog module, between
the two Python UAs of test_topology_hiding: each side sees only the proxy,
ACK, re-INVITEs both ways and BYE are routed from the dialog, a target
refresh changes where the next request goes, the dialog ends with the BYE
(listed over MI before, gone after)."""
import re

import pytest

from server import free_port, mi_call, wait_for
from test_topology_hiding import UA, h1, hv, invite, only_proxy

SCRIPT = """
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "dialog.so"
loadmodule "topology_hiding.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("topology_hiding", "th_callid_passwd", "cid-secret")
{params}
route {{
    if (has_totag()) {{
        if (topology_hiding_match()) {{
            xlog("L_NOTICE", "TH matched $rm did=$DLG_did\\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans())
                t_relay();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        t_relay();
        exit;
    }}
    {create}
    if ($rU == "hidecid")
        topology_hiding("UCD");
    else
        topology_hiding("U");
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
"""


@pytest.fixture(params=["create_dialog", "force_dialog"])
def proxy(server, request):
    port, mi = free_port(), free_port()
    caller, callee = UA("caller"), UA("callee")
    caller.behind = ["10.1.1.1", "10.2.2.2"]
    if request.param == "create_dialog":
        create, params = "create_dialog();", ""
    else:
        create = ""
        params = 'modparam("topology_hiding", "force_dialog", 1)'
    try:
        server.start(SCRIPT.format(port=port, mi=mi, callee=callee.port,
                                   create=create, params=params))
        yield server, port, mi, caller, callee
    finally:
        caller.close()
        callee.close()


def did_contact(msg, port, user):
    ct = h1(msg, "contact")
    m = re.fullmatch(rf"<sip:{user}@127\.0\.0\.1:{port};did=([0-9a-f]+\.[0-9a-f]+)"
                     r"(;[^>]*)?>(;.*)?", ct)
    assert m, ct
    assert "thinfo" not in ct
    return ct[1:ct.index(">")], m.group(1)


def dialogs(mi):
    return mi_call(mi, "dlg_list")["Dialogs"]


def test_dialog_mode_call_both_ways(proxy):
    server, port, mi, caller, callee = proxy
    p = ("127.0.0.1", port)
    callid = "dlg-cid-1"
    invite(caller, p, "bob", callid)
    inv, _ = callee.recv("INVITE")
    assert len(hv(inv, "via")) == 1 and hv(inv, "record-route") == []
    ct_callee, did = did_contact(inv, port, "alice")
    only_proxy(inv, port, caller)
    rr = f"Record-Route: <sip:{callee.addr};lr;side=callee>\r\n"
    callee.reply(inv, 200, "OK", "bb1", contact=f"<sip:bob@{callee.addr}>",
                 extra=rr)
    ok, _ = caller.recv("200 OK")
    ct_caller, did2 = did_contact(ok, port, "bob")
    assert did2 == did
    assert len(hv(ok, "via")) == 2 and hv(ok, "record-route") == []
    only_proxy(ok, port, callee)
    to = h1(ok, "to")
    listed = dialogs(mi)
    assert len(listed) == 1 and listed[0]["callid"] == callid

    caller.request("ACK", ct_caller, p, callid,
                   "<sip:alice@example.com>;tag=al1", to, 1)
    ack, _ = callee.recv("ACK")
    assert ack[0] == f"ACK sip:bob@{callee.addr} SIP/2.0"
    assert hv(ack, "route") == [f"<sip:{callee.addr};lr;side=callee>"]
    assert len(hv(ack, "via")) == 1

    # a re-INVITE from the callee with a new Contact
    callee.request("INVITE", ct_callee, p, callid, to,
                   "<sip:alice@example.com>;tag=al1", 1,
                   contact=f"<sip:bob3@{callee.addr}>")
    cinv, _ = caller.recv("INVITE")
    assert cinv[0] == f"INVITE sip:alice@{caller.addr};pass-me=1;drop-me=2 " \
                      "SIP/2.0"
    assert hv(cinv, "route") == [f"<sip:{caller.addr};lr;side=caller>",
                                 "<sip:10.2.2.2;lr>"]
    assert did_contact(cinv, port, "bob3")[1] == did
    only_proxy(cinv, port, callee)
    caller.reply(cinv, 200, "OK", "al1", contact=f"<sip:alice2@{caller.addr}>")
    cok, _ = callee.recv("200 OK")
    assert hv(cok, "via")[0].startswith(f"SIP/2.0/UDP {callee.addr};")
    assert len(hv(cok, "via")) == 1
    did_contact(cok, port, "alice2")
    only_proxy(cok, port, caller)
    callee.request("ACK", ct_callee, p, callid, to,
                   "<sip:alice@example.com>;tag=al1", 1)
    assert caller.recv("ACK")[0][0] == f"ACK sip:alice2@{caller.addr} SIP/2.0"

    # a re-INVITE from the caller goes to the callee's refreshed Contact
    caller.request("INVITE", ct_caller, p, callid,
                   "<sip:alice@example.com>;tag=al1", to, 2,
                   contact=f"<sip:alice2@{caller.addr}>")
    rinv, _ = callee.recv("INVITE")
    assert rinv[0] == f"INVITE sip:bob3@{callee.addr} SIP/2.0"
    assert len(hv(rinv, "via")) == 1
    callee.reply(rinv, 200, "OK", "bb1", contact=f"<sip:bob3@{callee.addr}>")
    assert len(hv(caller.recv("200 OK")[0], "via")) == 1
    caller.request("ACK", ct_caller, p, callid,
                   "<sip:alice@example.com>;tag=al1", to, 2)
    assert callee.recv("ACK")[0][0] == f"ACK sip:bob3@{callee.addr} SIP/2.0"

    # BYE from the callee ends the dialog
    callee.request("BYE", ct_callee, p, callid, to,
                   "<sip:alice@example.com>;tag=al1", 2)
    bye, _ = caller.recv("BYE")
    assert bye[0] == f"BYE sip:alice2@{caller.addr} SIP/2.0"
    only_proxy(bye, port, callee)
    caller.reply(bye, 200, "OK", "al1")
    assert hv(callee.recv("200 OK")[0], "cseq") == ["2 BYE"]
    wait_for(lambda: dialogs(mi) == [], what="the dialog to end")
    # $DLG_did is the dialog's id as OpenSIPS writes it (each hex part
    # least significant digit first); the Contact holds the table key
    h, i = did.split(".")
    assert f"TH matched BYE did={h[::-1]}.{i[::-1]}" in server.stderr()

    # the dialog is gone: its Contact leads nowhere any more
    callee.request("BYE", ct_callee, p, callid, to,
                   "<sip:alice@example.com>;tag=al1", 3)
    assert callee.recv("SIP/2.0")[0][0] == "SIP/2.0 404 Not here"
    assert "no hidden dialog" in server.stderr()


def test_dialog_mode_callid_and_did_in_user(proxy):
    server, port, mi, caller, callee = proxy
    p = ("127.0.0.1", port)
    callid = "dlg-cid-2@10.1.1.1"
    invite(caller, p, "hidecid", callid)
    inv, _ = callee.recv("INVITE")
    hidden = h1(inv, "call-id")
    assert hidden.startswith("DLGCH_") and callid not in inv[2]
    ct = h1(inv, "contact")
    m = re.fullmatch(rf"<sip:alice\.did\.([0-9a-f]+\.[0-9a-f]+)@127\.0\.0\.1:"
                     rf"{port}(;[^>]*)?>(;.*)?", ct)
    assert m, ct
    ct_callee = ct[1:ct.index(">")]
    callee.reply(inv, 200, "OK", "bb2", contact=f"<sip:bob@{callee.addr}>")
    ok, _ = caller.recv("200 OK")
    assert h1(ok, "call-id") == callid
    assert re.fullmatch(rf"<sip:bob\.did\.{re.escape(m.group(1))}@127\.0\.0\.1:"
                        rf"{port}>", h1(ok, "contact")), h1(ok, "contact")
    to = h1(ok, "to")
    ct_caller = h1(ok, "contact")[1:-1]
    caller.request("ACK", ct_caller, p, callid,
                   "<sip:alice@example.com>;tag=al1", to, 1)
    assert h1(callee.recv("ACK")[0], "call-id") == hidden
    assert len(dialogs(mi)) == 1
    # the callee's BYE carries the hidden Call-ID: the caller gets its own,
    # and the dialog ends
    callee.request("BYE", ct_callee, p, hidden, to,
                   "<sip:alice@example.com>;tag=al1", 1)
    bye, _ = caller.recv("BYE")
    assert h1(bye, "call-id") == callid
    caller.reply(bye, 200, "OK", "al1")
    assert h1(callee.recv("200 OK")[0], "call-id") == hidden
    wait_for(lambda: dialogs(mi) == [], what="the dialog to end")
