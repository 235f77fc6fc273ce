"""signaling: sl bound in mod_init (a clear error without it), the tm hook
taking over when a transaction exists, send_reply on the wire."""
import pytest

from opensipy import modloader
from opensipy.sr_module import ModuleError

import modkit
import opensipy_modules.signaling as sig
import opensipy_modules.sl as sl
from opensipy_modules.sl import sl_funcs


class FakeTm:
    """A stand-in with the tm hook's shape: a transaction exists for the
    messages in ``trans``; replies are recorded."""

    def __init__(self):
        self.trans = set()
        self.replies = []

    def t_gett(self, msg):
        return "T" if id(msg) in self.trans else None

    def t_reply(self, msg, code, reason):
        self.replies.append((code, reason))
        self.queued = list(getattr(msg, "reply_hdrs", None) or ())
        return 1

    def t_gen_totag(self, msg):
        return "tm-tag"


def registry_with(*mods):
    reg = modloader.Registry()
    for name, pymod in mods:
        reg.add(modloader.LoadedModule(name, pymod.exports, pymod))
    return reg


class TmModule:
    """A module object publishing the fake tm API."""

    def __init__(self, api):
        from opensipy.sr_module import ModuleExports
        self.exports = ModuleExports(name="tm")
        self._api = api

    def load_api(self):
        return self._api


@pytest.fixture
def registry():
    saved = modloader.registry
    yield
    modloader.registry = saved
    sig.sl_api = sig.tm_api = None


def test_without_sl_mod_init_fails_with_a_clear_error(registry):
    modloader.registry = registry_with(("signaling", sig))
    with pytest.raises(ModuleError, match=r"cannot bind the API of module "
                       r"'sl' \(needed by 'signaling'\): it is not loaded"):
        sig.mod_init()


def test_stateless_reply_through_sl(registry, peer, srv_sock):
    modloader.registry = registry_with(("sl", sl), ("signaling", sig))
    assert sig.mod_init() == 0
    assert sig.tm_api is None and sig.sl_api is not None
    msg = modkit.parse(modkit.request(via_port=peer.port),
                       ("127.0.0.1", peer.port), srv_sock)
    msg.reply_hdrs = ["X-Queued: 1\r\n"]
    assert sig.w_send_reply(msg, 480, "Temporarily Unavailable") == 1
    r = peer.recv()
    assert (r.status, r.reason) == (480, "Temporarily Unavailable")
    assert r.hdr("X-Queued") == "1"
    assert sl_funcs.is_sl_totag(r.to.tag)
    assert sig.pv_get_local_totag(msg, None) == r.to.tag
    # a reply that cannot be sent is -1
    lost = modkit.parse(modkit.request(via_port=peer.port))   # no rcv
    assert sig.w_send_reply(lost, 200, "OK") == -1


def test_stateful_when_a_transaction_exists(registry, peer, srv_sock):
    tm = FakeTm()
    modloader.registry = registry_with(("sl", sl), ("signaling", sig))
    modloader.registry.add(modloader.LoadedModule("tm", TmModule(tm).exports,
                                                  TmModule(tm)))
    assert sig.mod_init() == 0
    assert sig.tm_api is tm and sig.sl_api is not None
    with_t = modkit.parse(modkit.request(via_port=peer.port),
                          ("127.0.0.1", peer.port), srv_sock)
    tm.trans.add(id(with_t))
    assert sig.w_send_reply(with_t, 404, "Not Found") == 1
    assert tm.replies == [(404, "Not Found")]
    assert peer.nothing()
    assert sig.pv_get_local_totag(with_t, None) == "tm-tag"
    without = modkit.parse(modkit.request(via_port=peer.port),
                           ("127.0.0.1", peer.port), srv_sock)
    assert sig.w_send_reply(without, 404, "Not Found") == 1
    assert peer.recv().status == 404
    assert tm.replies == [(404, "Not Found")]


def test_extra_headers_go_out_with_the_stateful_reply(registry, peer,
                                                      srv_sock):
    """registrar passes its Contact lines as extra headers: through tm they
    join the request's reply queue for that reply only."""
    tm = FakeTm()
    modloader.registry = registry_with(("sl", sl), ("signaling", sig))
    modloader.registry.add(modloader.LoadedModule("tm", TmModule(tm).exports,
                                                  TmModule(tm)))
    assert sig.mod_init() == 0
    msg = modkit.parse(modkit.request(via_port=peer.port),
                       ("127.0.0.1", peer.port), srv_sock)
    msg.reply_hdrs = ["X-Before: 1\r\n"]
    tm.trans.add(id(msg))
    assert sig.send_reply(msg, 200, "OK",
                          ["Contact: <sip:a@h>;expires=60", "Date: x"]) == 1
    assert tm.queued == ["X-Before: 1\r\n",
                         "Contact: <sip:a@h>;expires=60\r\n", "Date: x\r\n"]
    assert msg.reply_hdrs == ["X-Before: 1\r\n"]


def test_tm_alone_is_enough_and_no_transaction_is_an_error(registry, peer,
                                                           srv_sock):
    tm = FakeTm()
    tmmod = TmModule(tm)
    modloader.registry = registry_with(("signaling", sig))
    modloader.registry.add(modloader.LoadedModule("tm", tmmod.exports, tmmod))
    assert sig.mod_init() == 0
    assert sig.sl_api is None
    msg = modkit.parse(modkit.request(via_port=peer.port),
                       ("127.0.0.1", peer.port), srv_sock)
    assert sig.w_send_reply(msg, 404, "Not Found") == -1
    assert sig.pv_get_local_totag(msg, None) is None


def test_code_fixup():
    assert sig.fixup_code(100) == 100 and sig.fixup_code(699) == 699
    for bad in (99, 700, 0):
        with pytest.raises(ValueError):
            sig.fixup_code(bad)
