"""Internal error codes and the error recorded on a message (OpenSIPS's
``error.h`` / ``ser_error``).

A function that fails for a reason the sender should hear about records it
on the request with :func:`set_error`; ``sl_reply_error()`` (module sl)
answers with the SIP status and reason :func:`err2reason_phrase` gives for
it.  The contract (other layers rely on it):

* ``msg.ser_error``: the ``E_*`` code (a negative int) of the last error
  recorded for this message; absent (class default None) when none was.
  It is per message, not per process, so a later request never inherits it.
* the recorder is whoever failed: the core's stateless ``forward()``
  (:mod:`opensipy.forward`: ``E_BAD_URI``, ``E_BAD_ADDRESS``,
  ``E_NO_SOCKET``, ``E_SEND``), modules (maxfwd records ``E_BAD_REQ`` for a
  bad Max-Forwards value).  A later success does not clear it (OpenSIPS's
  ``prev_ser_error`` behaves the same).
* :func:`err2reason_phrase` maps a code to ``(status, reason)`` as OpenSIPS
  3.x does: ``"<text> (<-code>/<signature>)"``; no recorded error gives
  ``E_UNSPEC``, i.e. ``500 "Server error occurred (1/SL)"``.
"""
from __future__ import annotations

from typing import Tuple

E_UNSPEC = -1
E_OUT_OF_MEM = -2
E_BAD_RE = -3
E_BUG = -5
E_CFG = -6
E_NO_SOCKET = -7
E_BAD_VIA = -8
E_BAD_TUPEL = -9
E_SCRIPT = -10
E_EXEC = -11
E_TOO_MANY_BRANCHES = -12
E_BAD_TO = -13
E_INVALID_PARAMS = -14
E_Q_INV_CHAR = -15
E_Q_EMPTY = -16
E_Q_TOO_BIG = -17
E_NO_DESTINATION = -18
E_IP_BLOCKED = -473
E_BAD_PROTO = -474
E_BAD_URI = -475
E_BAD_ADDRESS = -476
E_SEND = -477
E_BAD_REQ = -400
E_BAD_SERVER = -500

MAX_REASON_LEN = 128

# code -> (text, SIP status); anything else is a server error
_PHRASES = {
    E_IP_BLOCKED: ("Filtered destination", 473),
    E_SEND: ("Send failed", 477),
    E_BAD_ADDRESS: ("Unresolvable destination", 476),
    E_BAD_REQ: ("Bad Request", 400),
    E_BAD_URI: ("Bad URI", 475),
    E_BAD_TUPEL: ("Transaction tuple incomplete", 400),
    E_BAD_TO: ("Bad To", 400),
    E_EXEC: ("Error in external logic", 500),
    E_TOO_MANY_BRANCHES: ("Forking capacity exceeded", 500),
    E_Q_INV_CHAR: ("Invalid character in q parameter", 400),
    E_Q_EMPTY: ("Empty q parameter", 400),
    E_Q_TOO_BIG: ("q parameter too big", 400),
    E_NO_DESTINATION: ("No destination available", 500),
}


def set_error(msg, code: int) -> None:
    """Record ``code`` (an ``E_*`` value) as the error of ``msg``."""
    msg.ser_error = code


def get_error(msg) -> int:
    """The error recorded on ``msg``; ``E_UNSPEC`` when there is none."""
    code = getattr(msg, "ser_error", None)
    return E_UNSPEC if code is None else code


def err2reason_phrase(code: int, signature: str = "SL") -> Tuple[int, str]:
    """``(SIP status, reason phrase)`` for an internal error code."""
    text, status = _PHRASES.get(code, ("Server error occurred", 500))
    return status, f"{text} ({-code}/{signature})"[:MAX_REASON_LEN - 1]
