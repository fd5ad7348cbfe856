"""Reading a recorded trail (JSON lines) for `ktrail replay` and `rules profile`.

A trail file is input like any other: it may be cut off, edited, or made by
someone else. Every line is checked against the shape the rules engine
relies on before it gets there: an object with `evt` and `proc` objects,
and each field docs/events.md lists of its documented JSON type (the
registry's FIELDS). A line that fails is reported with its number and why,
counted, and skipped; or, when strict, the first one stops the reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

import orjson

from ktrail.events.registry import FIELDS

Event = dict[str, Any]
# The sensor's largest events are tens of KiB (argv is cut at 4 KiB, paths at
# 4 KiB each): a longer line is not one of them.
MAX_LINE = 16 << 20

# The sensor writes times as RFC 3339 in UTC with up to 9 fraction digits.
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z\Z")
_TIME_FIELDS = ("evt.time", "proc.start_time")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(test(x) for x in v)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


# docs/events.md's JSON types -> a check of a present, non-null value. Null
# is accepted for every field: the engine treats it as absent.
_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "string": _is_str,
    "bool": lambda v: isinstance(v, bool),
    "object": _is_dict,
    "list of strings": _list_of(_is_str),
    "list of objects": _list_of(_is_dict),
    "list of strings or int": lambda v: _is_int(v) or _list_of(_is_str)(v),
    "int, string": lambda v: _is_int(v) or isinstance(v, str),
}


def _check_for(kind: str) -> Callable[[Any], bool]:
    base = kind.removesuffix(" or null")  # "int, string or null" too
    if base not in _TYPES:
        raise AssertionError(f"events registry: field type {kind!r} has no check here")
    return _TYPES[base]


Check = tuple[tuple[str, ...], str, Callable[[Any], bool]]
# By the event's top-level key: an event has a few of the registry's
# objects, so only their fields are looked at.
_CHECKS: dict[str, list[Check]] = {}
for _name, _field in FIELDS.items():
    _keys = tuple(_name.split("."))
    _CHECKS.setdefault(_keys[0], []).append((_keys, _name, _check_for(_field.type)))
# Objects on the way to a field (`proc.parent` for proc.parent.exe) must be
# objects, or absent: getters walk through them.
_OBJECTS: dict[str, list[tuple[str, ...]]] = {}
for _top, _checks in _CHECKS.items():
    _OBJECTS[_top] = sorted({keys[:i] for keys, _, _ in _checks for i in range(1, len(keys))},
                            key=len)
# What proc.ancestors' entries hold (ancestor fields: proc.aname[N]...).
_ANCESTOR = {"exec_id": _is_str, "pid": _is_int, "exe": _is_str, "comm": _is_str}


def _get(e: Event, keys: tuple[str, ...]) -> Any:
    o: Any = e
    for k in keys:
        if not isinstance(o, dict):
            return None
        o = o.get(k)
    return o


def problem(e: Any) -> str | None:
    """Why `e` (a decoded JSON value) is not an event the rules can read,
    or None when it is."""
    if not isinstance(e, dict):
        return f"not a ktrail event (a JSON {type(e).__name__}, not an object)"
    evt = e.get("evt")
    if not isinstance(evt, dict) or not isinstance(evt.get("type"), str):
        return "not a ktrail event (no evt object with a type)"
    if not isinstance(e.get("proc"), dict):
        return "not a ktrail event (no proc object)"
    for top in e:
        if top not in _CHECKS:
            continue
        for keys in _OBJECTS[top]:
            v = _get(e, keys)
            if v is not None and not isinstance(v, dict):
                return f"{'.'.join(keys)} must be an object, not {type(v).__name__}"
        for keys, name, check in _CHECKS[top]:
            v = _get(e, keys)
            if v is not None and not check(v):
                return f"{name} must be {FIELDS[name].type}, not {_show(v)}"
    for name in _TIME_FIELDS:
        v = _get(e, tuple(name.split(".")))
        if v is not None and not _valid_time(v):
            return f"{name} is not an RFC 3339 time in UTC: {_show(v)}"
    for a in e["proc"].get("ancestors") or ():
        for k, check in _ANCESTOR.items():
            v = a.get(k)
            if v is not None and not check(v):
                return f"proc.ancestors[].{k} has the wrong type: {_show(v)}"
    return None


def _valid_time(v: str) -> bool:
    if not _TIME.match(v):
        return False
    try:
        datetime.fromisoformat(v[:19])  # month 13, Feb 30...
    except ValueError:
        return False
    return True


def _show(v: Any) -> str:
    text = orjson.dumps(v).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _sensor_record(e: Any) -> bool:
    """A stats or heartbeat record of `ktrail run`: in every trail it wrote."""
    if not isinstance(e, dict):
        return False
    evt = e.get("evt")
    return isinstance(evt, dict) and evt.get("type") in ("stats", "heartbeat") \
        and isinstance(e.get(evt["type"]), dict)


class BadLine(ValueError):
    """A line that is not an event, when reading strictly."""

    def __init__(self, number: int, why: str) -> None:
        super().__init__(f"line {number}: {why}")
        self.number = number
        self.why = why


class Trail:
    """The events of a JSON-lines trail, in order.

    Bad lines (not JSON, not an event of the documented shape) go to
    `report(number, why)` and are counted in `bad`; with `strict` the first
    one raises BadLine instead. Blank lines are skipped silently."""

    def __init__(self, f: BinaryIO, report: Callable[[int, str], None],
                 strict: bool = False) -> None:
        self.f = f
        self.report = report
        self.strict = strict
        self.lines = 0
        self.bad = 0
        self.records = 0   # stats and heartbeat records passed over

    def _lines(self) -> Iterator[tuple[bytes, str | None]]:
        """(line, None), or (b"", why) for a line too long to hold: a file
        without newlines must not be read into memory whole."""
        readline = self.f.readline
        while True:
            line = readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) <= MAX_LINE or line.endswith(b"\n"):
                yield line, None
                continue
            while line and not line.endswith(b"\n"):  # skip the rest of it
                line = readline(1 << 20)
            yield b"", f"longer than {MAX_LINE:,} bytes; not an event"

    def __iter__(self) -> Iterator[Event]:
        for n, (line, too_long) in enumerate(self._lines(), 1):
            self.lines = n
            why: str | None = too_long
            if why is None:
                if not line.strip():
                    continue
                try:
                    e = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    why = f"not JSON: {err}"
                else:
                    if _sensor_record(e):
                        self.records += 1   # the sensor's own health: not events
                        continue
                    why = problem(e)
            if why is None:
                yield e
                continue
            if line and not line.endswith(b"\n"):
                why += " (the last line is cut off)"
            if self.strict:
                raise BadLine(n, why)
            self.bad += 1
            self.report(n, why)
