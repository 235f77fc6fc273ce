"""Time recurrences (RFC 2445 fields), as cfgutils' check_time_rec() reads
them: ``[timezone|]dtstart|dtend|duration|freq|until|interval|byday|bymday|
byyday|byweekno|bymonth``, and expressions over them.

* ``timezone`` (optional, e.g. ``Europe/Amsterdam``): the zone the times
  are written in; by default the server's local time;
* ``dtstart``/``dtend``/``until``: ``YYYYMMDDThhmmss`` (a trailing ``Z``:
  UTC); ``dtend`` and ``duration`` (``P1W``, ``P2DT3H``, ``PT30M``,
  case-insensitive) say how long each occurrence lasts; ``dtstart`` is
  required;
* ``freq`` (``yearly``, ``monthly``, ``weekly``, ``daily``) repeats the
  interval every ``interval`` periods (default 1); the ``by*`` lists are
  comma-separated (``byday``: ``MO``, ``2TU``, ``-1FR``; the others:
  integers, negative ones counted from the end);
* without ``freq`` there is one occurrence (``until``, ``interval`` and
  the ``by*`` rules need a ``freq``); without ``dtend`` and ``duration``
  it never ends, and with ``freq`` it lasts until the end of dtstart's
  day, week, month or year (the smallest unit the rules name).

Recurrences combine with ``&`` (and), ``/`` (or), ``!`` (not) and
parentheses; as in OpenSIPS one level uses one kind of operator
(``A & B & !C``, ``TZ|A / (B & C)``; ``A & B / C`` is an error).  A ``/`` inside a time-zone name (the
first field, before any ``|``) belongs to the name.

:func:`parse` raises ``ValueError`` naming the field at fault; the result's
``matches(ts)`` tells whether a Unix time falls in it.
"""
from __future__ import annotations

import calendar
import datetime as _dt
import re
import zoneinfo
from typing import List, Tuple

FIELDS = ("dtstart", "dtend", "duration", "freq", "until", "interval",
          "byday", "bymday", "byyday", "byweekno", "bymonth")
FREQS = ("yearly", "monthly", "weekly", "daily")
_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_DUR = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?"
                  r"(?:(\d+)S)?)?\Z", re.I)
_SCAN_DAYS = 400           # how far back occurrences are looked for


def _time(text: str, what: str, tz=None) -> _dt.datetime:
    t = text.strip()
    utc = t.upper().endswith("Z")
    if utc:
        t = t[:-1]
    try:
        d = _dt.datetime.strptime(t.upper(), "%Y%m%dT%H%M%S")
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not YYYYMMDDThhmmss") \
            from None
    if utc:         # to the recurrence's zone, naive, as the rest is
        d = _dt.datetime.fromtimestamp(        # computed
            calendar.timegm(d.timetuple()), tz).replace(tzinfo=None)
    return d


def _duration(text: str) -> _dt.timedelta:
    m = _DUR.match(text.strip())
    if not m or not any(m.groups()):
        raise ValueError(f"duration: {text!r} is not an RFC 2445 duration "
                         f"(P1W, P1DT2H, PT30M ...)")
    w, d, h, mi, s = (int(x or 0) for x in m.groups())
    return _dt.timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=s)


def _ints(text: str, what: str, lo: int, hi: int) -> List[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            v = int(part)
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number") from None
        if v == 0 or not lo <= abs(v) <= hi:
            raise ValueError(f"{what}: {v} out of range (1..{hi} or "
                             f"-{hi}..-1)")
        out.append(v)
    return out


def _byday(text: str) -> List[Tuple[int, int]]:
    out = []
    for part in text.split(","):
        p = part.strip().upper()
        m = re.match(r"([+-]?\d+)?(MO|TU|WE|TH|FR|SA|SU)\Z", p)
        if not m:
            raise ValueError(f"byday: {part!r} is not [n]MO..SU")
        out.append((int(m.group(1) or 0), _DAYS[m.group(2)]))
    return out


class TimeRec:
    __slots__ = ("tz", "dtstart", "duration", "freq", "until", "interval",
                 "byday", "bymday", "byyday", "byweekno", "bymonth")

    def matches(self, ts: float) -> bool:
        t = _dt.datetime.fromtimestamp(int(ts), self.tz).replace(tzinfo=None)
        if t < self.dtstart:
            return False
        if self.until is not None and t > self.until:
            return False
        if self.freq is None:
            return self.duration is None or t < self.dtstart + self.duration
        dur = self.duration if self.duration is not None \
            else self._default_duration()
        tod = self.dtstart - self.dtstart.replace(hour=0, minute=0,
                                                  second=0)
        back = min(dur.days + 1, _SCAN_DAYS)
        day0 = t.date()
        for k in range(back + 1):
            d = day0 - _dt.timedelta(days=k)
            start = _dt.datetime.combine(d, _dt.time()) + tod
            if start > t or start < self.dtstart:
                continue
            if t >= start + dur:
                continue
            if self.occurs_on(d):
                return True
        return False

    def _default_duration(self) -> _dt.timedelta:
        """No dtend nor duration with a freq: as OpenSIPS, the occurrence
        lasts until the end of dtstart's day (a by-day rule or daily),
        week (weekly, byweekno; weeks end on Saturday), month (monthly,
        bymonth) or year."""
        s = self.dtstart
        day0 = _dt.datetime.combine(s.date(), _dt.time())
        if self.freq == "daily" or self.byday or self.bymday \
                or self.byyday:
            end = day0 + _dt.timedelta(days=1)
        elif self.freq == "weekly" or self.byweekno:
            end = day0 + _dt.timedelta(days=7 - (s.weekday() + 1) % 7)
        elif self.freq == "monthly" or self.bymonth:
            end = (day0.replace(day=1) + _dt.timedelta(days=32)).replace(
                day=1)
        else:
            end = day0.replace(year=s.year + 1, month=1, day=1)
        return end - s

    def occurs_on(self, d: _dt.date) -> bool:
        s = self.dtstart.date()
        f = self.freq
        if f == "daily":
            if (d - s).days % self.interval:
                return False
        elif f == "weekly":
            ws = s - _dt.timedelta(days=s.weekday())
            wd = d - _dt.timedelta(days=d.weekday())
            if ((wd - ws).days // 7) % self.interval:
                return False
        elif f == "monthly":
            if ((d.year - s.year) * 12 + d.month - s.month) % self.interval:
                return False
        elif (d.year - s.year) % self.interval:
            return False
        if self.bymonth and d.month not in [m if m > 0 else 13 + m
                                            for m in self.bymonth]:
            return False
        mlen = calendar.monthrange(d.year, d.month)[1]
        ylen = 366 if calendar.isleap(d.year) else 365
        if self.bymday and d.day not in [x if x > 0 else mlen + 1 + x
                                         for x in self.bymday]:
            return False
        yday = d.timetuple().tm_yday
        if self.byyday and yday not in [x if x > 0 else ylen + 1 + x
                                        for x in self.byyday]:
            return False
        if self.byweekno:
            wk = d.isocalendar()[1]
            last = _dt.date(d.year, 12, 28).isocalendar()[1]
            if wk not in [x if x > 0 else last + 1 + x
                          for x in self.byweekno]:
                return False
        if self.byday and not self._byday_ok(d, mlen, ylen, yday):
            return False
        # no by-rule for a field: the occurrence repeats dtstart's own
        if f == "weekly" and not self.byday and d.weekday() != s.weekday():
            return False
        day_rule = self.byday or self.bymday or self.byyday or self.byweekno
        if f in ("monthly", "yearly") and not day_rule and d.day != s.day:
            return False
        if f == "yearly" and not (self.bymonth or self.byyday
                                  or self.byweekno) and d.month != s.month:
            return False
        return True

    def _byday_ok(self, d, mlen, ylen, yday) -> bool:
        for n, wd in self.byday:
            if d.weekday() != wd:
                continue
            if n == 0:
                return True
            if self.freq == "yearly" and not self.bymonth:
                pos, total = (yday - 1) // 7 + 1, (ylen - yday) // 7
            else:
                pos, total = (d.day - 1) // 7 + 1, (mlen - d.day) // 7
            if n > 0 and pos == n:
                return True
            if n < 0 and total == -n - 1:
                return True
        return False


def parse_rec(text: str) -> TimeRec:
    """One recurrence (no operators)."""
    parts = [p.strip() for p in str(text).split("|")]
    r = TimeRec()
    r.tz = None
    if parts and parts[0] and not parts[0][:1].isdigit():
        try:
            r.tz = zoneinfo.ZoneInfo(parts[0])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown zone {parts[0]!r}") \
                from None
        parts = parts[1:]
    if len(parts) > len(FIELDS):
        raise ValueError(f"too many fields ({len(parts)}; at most "
                         f"{len(FIELDS)}: {'|'.join(FIELDS)})")
    parts += [""] * (len(FIELDS) - len(parts))
    f = dict(zip(FIELDS, parts))
    if not f["dtstart"]:
        raise ValueError("dtstart is missing")
    r.dtstart = _time(f["dtstart"], "dtstart", r.tz)
    r.duration = None
    if f["dtend"]:
        end = _time(f["dtend"], "dtend", r.tz)
        if end <= r.dtstart:
            raise ValueError("dtend is not after dtstart")
        r.duration = end - r.dtstart
    elif f["duration"]:
        r.duration = _duration(f["duration"])
    freq = f["freq"].lower()
    if freq and freq not in FREQS:
        raise ValueError(f"freq: {f['freq']!r} is not one of "
                         f"{', '.join(FREQS)}")
    r.freq = freq or None
    r.until = _time(f["until"], "until", r.tz) if f["until"] else None
    r.interval = 1
    if f["interval"]:
        if not f["interval"].isdigit() or int(f["interval"]) < 1:
            raise ValueError(f"interval: {f['interval']!r} is not a "
                             f"positive integer")
        r.interval = int(f["interval"])
    r.byday = _byday(f["byday"]) if f["byday"] else []
    r.bymday = _ints(f["bymday"], "bymday", 1, 31) if f["bymday"] else []
    r.byyday = _ints(f["byyday"], "byyday", 1, 366) if f["byyday"] else []
    r.byweekno = _ints(f["byweekno"], "byweekno", 1, 53) \
        if f["byweekno"] else []
    r.bymonth = _ints(f["bymonth"], "bymonth", 1, 12) if f["bymonth"] else []
    if r.freq is None and (r.until or f["interval"] or r.byday or r.bymday
                           or r.byyday or r.byweekno or r.bymonth):
        raise ValueError("freq is missing (until, interval and the by* "
                         "rules need it)")
    return r


# ---- expressions: & (and), / (or), ! (not), parentheses ----------------------

class _Not:
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a

    def matches(self, ts) -> bool:
        return not self.a.matches(ts)


class _All:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    def matches(self, ts) -> bool:
        return all(x.matches(ts) for x in self.items)


class _Any(_All):
    def matches(self, ts) -> bool:
        return any(x.matches(ts) for x in self.items)


def _tokens(text: str) -> List[str]:
    out, cur = [], []

    def flush():
        if cur:
            out.append("".join(cur))
            cur.clear()
    for ch in text:
        if ch.isspace():
            flush()
        elif ch in "&!()":
            flush()
            out.append(ch)
        elif ch == "/" and cur and "|" not in cur:
            cur.append(ch)              # inside a time-zone name
        elif ch == "/":
            flush()
            out.append(ch)
        else:
            cur.append(ch)
    flush()
    return out


def parse(text: str):
    """A recurrence or an expression over recurrences."""
    toks = _tokens(str(text))
    if not toks:
        raise ValueError("dtstart is missing")
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def alt():
        # as OpenSIPS: one operator kind per level, parentheses mix them
        items = [unary()]
        op = None
        while peek() in ("&", "/"):
            if op is not None and peek() != op:
                raise ValueError("'&' and '/' cannot be mixed without "
                                 "parentheses")
            op = take()
            items.append(unary())
        if op is None:
            return items[0]
        return _All(items) if op == "&" else _Any(items)

    def unary():
        t = peek()
        if t is None:
            raise ValueError("expression ends too early")
        if t == "!":
            take()
            return _Not(unary())
        if t == "(":
            take()
            e = alt()
            if peek() != ")":
                raise ValueError("missing ')'")
            take()
            return e
        if t in ("&", "/", ")"):
            raise ValueError(f"unexpected {t!r}")
        return parse_rec(take())

    e = alt()
    if pos != len(toks):
        raise ValueError(f"unexpected {toks[pos]!r}")
    return e
