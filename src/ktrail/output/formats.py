"""Event encoders. Each turns a whole batch into one bytes object."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ktrail.events.registry import summary
from ktrail.strings import for_json, printable
from ktrail.units import Time, rfc3339

Event = dict[str, Any]


def _plain(o: Any) -> Any:
    # Subclasses of int, str, dict and list come here (OPT_PASSTHROUGH_SUBCLASS):
    # a Time becomes its RFC 3339 text, anything else (an IntEnum, a Counter)
    # its plain value.
    if type(o) is Time:
        return rfc3339(o)
    for base in (int, str, dict, list):
        if isinstance(o, base):
            return base(o)
    raise TypeError(f"{type(o).__name__} is not JSON")


# The JSON of an event, alert or record, times as RFC 3339. (A partial, not
# a def: called from C, no Python frame per event.) It refuses a string that
# holds undecodable bytes (lone surrogates, ktrail.strings): see dumps().
_dumps: Callable[[Any], bytes] = functools.partial(
    orjson.dumps, default=_plain, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def dumps(o: Any) -> bytes:
    """The JSON of an event, alert or record, times as RFC 3339: the one place
    where a Time becomes text. Everything that writes events uses it.

    The enricher already gives undecodable bytes as U+FFFD with a `_b64`
    sibling; a string that still holds them (a record of the sensor's own,
    a rule's output) is made so here rather than failing the batch."""
    try:
        return _dumps(o)
    except TypeError:
        safe = for_json(o)
        if safe is o:
            raise  # not a string's fault
        return _dumps(safe)


class Format(Protocol):
    def encode(self, events: list[Event]) -> bytes: ...


def json_lines(events: list[Event]) -> list[bytes]:
    """Each event's JSON (no newline). A `proc` object that several events of
    the list share (the enricher shares it between consecutive events of a
    thread) is encoded once and spliced into the others as a fragment."""
    fragment = orjson.Fragment
    seen: dict[int, Any] = {}  # id(proc) -> None (seen once) or its fragment
    out = []
    append = out.append
    fast = _dumps
    for e in events:
        p = e.get("proc")
        if p is not None:
            f = seen.get(id(p), False)
            if f is False:  # first sight: encoded with the event
                seen[id(p)] = None
            else:
                if f is None:
                    f = seen[id(p)] = fragment(dumps(p))
                e = {**e, "proc": f}
        try:
            append(fast(e))
        except TypeError:  # the rare string dumps() has to make valid first
            append(dumps(e))
    return out


def join(lines: list[bytes]) -> bytes:
    """JSON lines as one buffer, each ended by a newline."""
    return b"\n".join(lines) + b"\n" if lines else b""


class JsonLines:
    """One JSON object per line; the trail format, and what `--format json` gives."""

    def encode(self, events: list[Event]) -> bytes:
        return join(json_lines(events))


_COLORS = {"exec": "32", "fork": "36", "exit": "33", "stats": "35", "heartbeat": "35"}


class Text:
    """Aligned one-line summaries for a person at a terminal.

    Every piece of event data goes through `printable` before it is painted:
    a name or argument holding a newline, ESC or a bidi override cannot forge
    a line, move the cursor or retitle the terminal. Only the colour codes
    added here reach the terminal raw."""

    def __init__(self, color: bool = False) -> None:
        self.color = color

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def line(self, e: Event) -> str:
        evt = e["evt"]
        etype = evt["type"]
        if etype == "stats":
            return self._paint(_COLORS["stats"],
                               "stats  " + printable(stats_summary(e["stats"])))
        if etype == "heartbeat":
            return self._paint(_COLORS["heartbeat"],
                               "heartbeat  " + printable(heartbeat_summary(e["heartbeat"])))
        if etype == "alert":
            return self.alert(e)
        proc, user = e["proc"], e.get("user") or {}
        who = f"{proc['comm']}({proc['pid']})"
        parent = proc.get("parent") or {}
        if parent.get("comm"):
            who += f" < {parent['comm']}({parent.get('pid')})"
        uname = user.get("name") or user.get("uid")
        shown = printable(f"{etype:<5}")
        head = f"{printable(str(evt['time'])[11:26])} " \
               f"{self._paint(_COLORS.get(etype, '0'), shown)}"
        cont = f" [{e['container']['id']}]" if e.get("container") else ""
        # One escape pass over everything else, all of it from the event.
        return f"{head} {printable(f'{uname!s:<8} {who}{cont}  {summary(e)}')}"

    def alert(self, e: Event) -> str:
        """Alerts stand out: bold red (or ALERT markers without colour),
        the rule's rendered text, then the process chain that led to it."""
        a = e["alert"]
        proc = e.get("proc") or {}
        chain = [f"{proc.get('comm')}({proc.get('pid')})"] + [
            f"{p.get('comm') or p.get('exe')}({p.get('pid')})"
            for p in (proc.get("ancestors") or [])]
        head = printable(f"{str(e['evt'].get('time') or '')[11:26]} ALERT {a['priority']} "
                         f"{a['rule']}")
        tags = printable(f" [{', '.join(a['mitre'])}]") if a.get("mitre") else ""
        # Our own line breaks and indent; the rule's text and the chain escaped.
        text = f"{head}{tags}\n    {printable(str(a['output']))}"
        if e.get("proc"):  # the sensor's own tamper alerts have none
            text += f"\n    process: {printable(' < '.join(chain))}"
        return f"\x1b[1;31m{text}\x1b[0m" if self.color else f"!!! {text}"

    def encode(self, events: list[Event]) -> bytes:
        if not events:
            return b""
        return ("\n".join(self.line(e) for e in events) + "\n").encode("utf-8", "replace")


def heartbeat_summary(h: dict[str, Any]) -> str:
    lost = h["lost"]
    return (f"seq={h['seq']} events={h['events_total']} lost={lost['kernel']} "
            f"stalls={h['stalls']}")


def stats_summary(s: dict[str, Any]) -> str:
    k = s["kernel"]
    parts = [
        f"events={s['events_total']}",
        f"lost={k['dropped_total']}",
    ]
    if k["dropped_total"]:
        parts.append("lost_by_type=" + ",".join(f"{t}:{n}" for t, n in k["dropped"].items() if n))
    store = s.get("store")
    if store:
        parts.append(f"stored={store['written']}")
        if store["shed"] or store["failed"]:
            parts.append(f"not_stored={store['shed'] + store['failed']}")
    parts.append(f"procs={s['proc_table']['size']}")
    parts.append(f"evicted={s['proc_table']['evictions']}")
    return " ".join(parts)


FORMATS = ("json", "text")


def make_format(name: str, color: bool = False) -> Format:
    return JsonLines() if name == "json" else Text(color=color)
