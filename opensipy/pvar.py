"""Pseudo-variables: ``$ru``, ``$hdr(From)[1]``, ``$(ru{uri.user})`` ...

Contract for the script compiler (LANG) and for modules
======================================================

Parsing (compile / fixup time)
------------------------------
* ``parse_pv(text, registry=None) -> PVSpec`` parses one variable token
  (``$ru``, ``$hdr(Via)[-1]``, ``$(var(x){s.substr,1,2}{s.tolower})`` ...).
  Unknown variable, bad name, bad index or unknown transformation raise
  ``PVError(message)``.  Module variables come from
  ``registry.find_pv(name) -> sr_module.PVExport | None``.
* ``parse_format(text, registry=None) -> Format`` for a string literal with
  embedded variables.  LANG passes the *decoded* string contents (escapes
  such as ``\\n`` already resolved by the lexer).  ``Format.is_constant``,
  ``Format.value`` (the text, when constant), ``Format.eval(msg) -> str``
  (a NULL variable prints as ``<null>``, like xlog).

Run time
--------
* ``PVSpec.get(msg) -> str | int | None`` (None is NULL).
* ``PVSpec.set(msg, value, op="=")``; op is one of ``=``, ``:=``, ``+=``,
  ``-=``; value None assigns NULL (deletes); raises ``PVError`` when the
  variable is not writable.  ``PVSpec.writable``, ``PVSpec.text``.

The per-run context (what LANG maintains while a route runs)
------------------------------------------------------------
Every worker process runs one route at a time, so the context is one
module-level object, :data:`ctx` (an instance of :class:`RunContext`), not a
field of the message (a route may run without a message: startup/timer
routes get a dummy message, and the same message may be routed twice).

LANG's compiled code must:

* after **every function call, route call or ``return``/``exit``** store the
  int result: ``ctx.retcode = rc``  (read by ``$rc`` / ``$retcode``);
* around a **``route(name, a1, a2 ...)`` call** save and restore the route
  parameters (read by ``$param(1)`` ...; index is 1-based; an index past the
  end reads NULL)::

      saved = ctx.params
      ctx.params = (a1, a2)          # evaluated values: str / int / None
      try:
          rc = route_fn(msg)
      finally:
          ctx.params = saved

* set ``ctx.route_type`` (sr_module.REQUEST_ROUTE ...) and ``ctx.route_name``
  when it enters a top-level route (``$rt`` is not ``route_type``: see below).

The core sets ``ctx.err_class``, ``ctx.err_level``, ``ctx.err_info``,
``ctx.err_rcode``, ``ctx.err_rreason`` (read by ``$err.*``) before it runs
``error_route``; ``ctx.reset_error()`` clears them.

Per-message state kept on the message object (plain attributes, created
lazily with ``getattr(msg, name, default)`` so any SipMsg works):

* ``msg.avps``: ``dict name -> list`` of values, newest first (tm may move
  the dict to a transaction and put it back);
* ``msg.branches``: list of :class:`Branch` added by ``append_branch``;
* ``msg.new_uri``, ``msg.dst_uri``, ``msg.flags``, ``msg.ruri_bflags``,
  ``msg.force_rport``, ``msg.force_send_socket`` (parser contract names).

``$var(x)`` values are per process and survive across messages: they live
in :data:`script_vars` (``dict name -> value``).
"""
from __future__ import annotations


class PVError(Exception):
    """A pseudo-variable cannot be parsed, or cannot be written."""


class RunContext:
    """The state of the route that runs now in this process (see the
    module docstring for who sets what)."""
    __slots__ = ("retcode", "params", "route_type", "route_name",
                 "err_class", "err_level", "err_info", "err_rcode",
                 "err_rreason")

    def __init__(self):
        self.retcode = 0
        self.params = ()
        self.route_type = 1
        self.route_name = None
        self.reset_error()

    def reset_error(self):
        self.err_class = None
        self.err_level = None
        self.err_info = None
        self.err_rcode = None
        self.err_rreason = None


ctx = RunContext()

# $var(x): per process, kept across messages
script_vars: dict = {}
