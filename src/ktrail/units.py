"""Units shared by every layer: sizes, durations and times, clock ticks.

This is the bottom of the package (tests/unit/test_layers.py): it imports
nothing from ktrail, so that the configuration, the command line, the store,
the engine and the rules can all use it without depending on each other.

Parse errors are ValueError subclasses that say what is wrong with the text
only; the caller prefixes the place (an option name, or FILE:LINE:COL).
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime

# ---- sizes ------------------------------------------------------------------------


class SizeSyntaxError(ValueError):
    pass


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'100M', '512k', '1G', '4096' -> bytes (binary multiples; 'KB', 'MiB' alike)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "KMG" else (t, "")
    try:
        value = int(float(num) * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):  # 'abc', 'inf', '1e400'; int(nan) is ValueError
        raise SizeSyntaxError(f"{text!r} is not a size (examples: 4096, 512K, 100M, 1G)") \
            from None
    if value <= 0:
        raise SizeSyntaxError(f"{text!r} must be positive")
    return value


# ---- durations and times ------------------------------------------------------------
#
# Times are integer nanoseconds since the epoch (UTC) wherever they are
# compared or stored; events carry them as RFC 3339 strings
# (`2026-11-21T21:45:23.481076214Z`). The command line and the
# configuration take durations (`10m`, `2d`) or timestamps.

NS = 1_000_000_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


class TimeSyntaxError(ValueError):
    pass


# Times and durations are stored as SQLite INTEGERs (int64 ns): past these
# bounds (the years 1678 and 2262) they cannot be compared or stored.
MIN_NS = -(2**63)
MAX_NS = 2**63 - 1


def _in_range(text: str, ns: int, what: str) -> int:
    if not MIN_NS <= ns <= MAX_NS:
        raise TimeSyntaxError(f"{text!r} is out of range: {what} must lie between the years "
                              "1678 and 2262 (64-bit nanoseconds)")
    return ns


class Rfc3339Parser:
    """The sensor's own fixed-width RFC 3339 strings -> ns, cheaply.

    Events of one second share their first 19 characters, so the calendar
    arithmetic runs once per distinct second (a bounded cache: event times
    and process start times interleave); the rest is one slice and one int().
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.seconds: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> ns
        self.max_entries = max_entries

    def __call__(self, text: str) -> int:
        prefix = text[:19]
        sec_ns = self.seconds.get(prefix)
        if sec_ns is None:
            try:
                sec_ns = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]),
                                          int(text[11:13]), int(text[14:16]),
                                          int(text[17:19]))) * NS
            except ValueError:
                raise TimeSyntaxError(f"{text!r} is not an RFC 3339 time") from None
            if len(self.seconds) >= self.max_entries:
                self.seconds.clear()
            self.seconds[prefix] = sec_ns
        frac = text[20:-1]  # between '.' and 'Z'; the sensor writes 9 digits
        return sec_ns + (int(frac) if len(frac) == 9 else
                         int(frac.ljust(9, "0")[:9]) if frac else 0)


# (second, its text): strftime runs once per second, not per event. One tuple,
# swapped whole, so a thread never pairs a second with another's text.
_last_second: tuple[int, str] = (-1, "")


def rfc3339(ns: int) -> str:
    """ns since the epoch -> RFC 3339 in UTC with nanoseconds, as events carry it."""
    global _last_second
    sec, frac = divmod(ns, NS)
    last = _last_second
    if last[0] != sec:
        last = _last_second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{last[1]}.{frac:09d}Z"


def to_rfc3339(ns: int | None) -> str | None:
    return None if ns is None else rfc3339(ns)


class Time(int):
    """A wall-clock instant in ns since the epoch (evt.time, proc.start_time).

    Inside the sensor it stays an integer: rules, windows and the store use it
    as one. It becomes RFC 3339 text once, at the edge: the event encoder
    (output.formats.dumps) and str() write it so."""

    __slots__ = ()

    def __str__(self) -> str:
        return rfc3339(self)

    def __repr__(self) -> str:
        return f"Time({int(self)})"


def parse_duration(text: str) -> int:
    """'90s', '10m', '1h', '2d', '1w', '1h30m' -> nanoseconds."""
    t = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not t or pos != len(t):
        raise TimeSyntaxError(f"{text!r} is not a duration (examples: 90s, 10m, 1h, 2d, 1w)")
    # A long run of digits is inf as a float; compare before int() does.
    if not total * NS <= MAX_NS:
        raise TimeSyntaxError(f"{text!r} is too long a duration (at most about 292 years)")
    return int(total * NS)


def parse_when(text: str, now_ns: int | None = None) -> int:
    """A point in time: a duration back from now ('10m' = ten minutes ago),
    an RFC 3339 / ISO 8601 timestamp (UTC unless it says otherwise; a date
    alone is its midnight), or '@<seconds since the epoch>'."""
    t = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if t.startswith("@"):
        try:
            ns = int(float(t[1:]) * NS)
        except (ValueError, OverflowError):  # 'x', 'nan'; 'inf', '1e400'
            raise TimeSyntaxError(f"{text!r}: '@' must be followed by seconds since the "
                                  "epoch") from None
        return _in_range(text, ns, "a time")
    if t and t[0].isdigit() and t[-1].lower() in _UNITS and "-" not in t:
        return _in_range(text, now - parse_duration(t), "the time it reaches back to")
    return _in_range(text, _parse_timestamp(text), "a time")


_FRACTION = re.compile(r"(\.\d+)")


def _parse_timestamp(text: str) -> int:
    t = text.strip().replace(" ", "T", 1)
    if t[-1:] in ("Z", "z"):
        t = t[:-1] + "+00:00"
    # datetime keeps microseconds; nanoseconds are put back by hand.
    frac_ns = 0
    m = _FRACTION.search(t)
    if m and "T" in t and m.start() > t.index("T"):
        digits = m.group(1)[1:]
        frac_ns = int(digits[:9].ljust(9, "0"))
        t = t[:m.start()] + t[m.end():]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise TimeSyntaxError(
            f"{text!r} is neither a duration (10m, 1h, 2d) nor a timestamp "
            "(2026-11-21T21:45:00Z, 2026-11-21 21:45, 2026-11-21)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return calendar.timegm(dt.utctimetuple()) * NS + frac_ns

# ---- ids ---------------------------------------------------------------------------

# Linux's bounds: pid_max can be raised to PID_MAX_LIMIT at most; uid_t and
# gid_t are 32-bit, and (uid_t)-1 means "no id" to the kernel.
PID_MAX_LIMIT = 4_194_304
ID_MAX = 4_294_967_294

# ---- clock ticks --------------------------------------------------------------------

# /proc/PID/stat counts process start times in USER_HZ ticks since boot; the
# process table keys processes by them, the store turns them back into ns.
USER_HZ = 100
NS_PER_TICK = NS // USER_HZ


def ticks(boot_ns: int) -> int:
    """start_boottime ns -> clock ticks, exactly as /proc/PID/stat reports it."""
    return boot_ns // NS_PER_TICK


# --- the sensor's clock -------------------------------------------------------------


class Clock:
    """Converts bpf_ktime_get_boot_ns() stamps to wall time.

    The offset is taken once at start; later wall-clock steps (NTP) do not
    reorder events, which keep the kernel's monotonic order.
    """

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def wall_ns(self, boot_ns: int) -> int:
        return boot_ns + self.offset_ns

    def time(self, boot_ns: int) -> Time:
        return Time(boot_ns + self.offset_ns)

    def now_boot_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
