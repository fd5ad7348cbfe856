"""Stateful rules: sequences and thresholds, each with bounded state.

Built once by the loader to check a rule's spec (so `ktrail rules check`
reports a bad one with its place), and again by each engine, which owns
the state.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ktrail.rules import fields as F
from ktrail.rules.compiler import CompileError, Predicate, Scope, compile_condition
from ktrail.rules.lang import ConditionError, parse

Event = dict[str, Any]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(v: Any) -> float:
    """'60s', '5m', '500ms' or a number of seconds -> seconds."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    m = _DURATION.match(str(v))
    if not m:
        raise ValueError(f"not a duration: {v!r} (use e.g. 30s, 5m, 500ms)")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def event_time(e: Event) -> float:
    """evt.time (a Time, or RFC 3339 text in replayed JSON) -> seconds since the epoch."""
    t = e["evt"].get("time")
    if isinstance(t, int):
        return t / 1e9
    if not isinstance(t, str):
        return time.time()
    # datetime keeps microseconds: cut the nanosecond digits.
    base, _, frac = t.rstrip("Z").partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))


class BoundedState:
    """An LRU map with a bound; evictions are counted, never silent."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.evictions = 0
        self.expired = 0

    def get(self, key: Any) -> Any:
        v = self.data.get(key)
        if v is not None:
            self.data.move_to_end(key)
        return v

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.max_entries:
            self.data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: Any) -> Any:
        return self.data.pop(key, None)

    def stats(self) -> dict[str, int]:
        return {"size": len(self.data), "max_entries": self.max_entries,
                "evictions": self.evictions, "expired": self.expired}


def _getter(name: str, dialect: str) -> Callable[[Event], Any]:
    try:
        return F.resolve(name, dialect)
    except F.UnknownField as e:
        raise ValueError(str(e)) from None


def _predicate(text: str, scope: Scope, where: str) -> tuple[Predicate, frozenset[str] | None]:
    try:
        c = compile_condition(parse(text), scope, where)
    except ConditionError as e:
        raise ValueError(f"{where}: column {e.col}: {e.message}") from None
    except CompileError as e:
        raise ValueError(f"{where}: column {e.col}: {e.message}") from None
    return c.predicate, c.types


@dataclass
class Sequence:
    """Ordered steps by one process (`by: process`), one process tree (`by:
    tree`: the first step's creator and everything below it) or anywhere
    (`by: host`), within a window; each step may name a key that must be
    equal across steps (a file created, then chmod-ed, then executed)."""

    steps: list[tuple[Predicate, Callable[[Event], Any] | None]]
    types: frozenset[str] | None
    by: str
    within: float
    state: BoundedState

    @classmethod
    def build(cls, spec: dict[str, Any], scope: Scope, max_entries: int) -> Sequence:
        if not isinstance(spec, dict) or not isinstance(spec.get("steps"), list):
            raise ValueError("sequence: needs steps: (a list of {condition, key})")
        if len(spec["steps"]) < 2:
            raise ValueError("sequence: needs at least two steps")
        by = spec.get("by", "process")
        if by not in ("process", "tree", "host"):
            raise ValueError(f"sequence: by: {by!r} is not process, tree or host")
        steps = []
        types: set[str] | None = set()
        for i, st in enumerate(spec["steps"], 1):
            if not isinstance(st, dict) or "condition" not in st:
                raise ValueError(f"sequence step {i} needs a condition:")
            pred, t = _predicate(str(st["condition"]), scope, f"sequence step {i}")
            key = _getter(str(st["key"]), scope.dialect) if st.get("key") else None
            steps.append((pred, key))
            types = None if types is None or t is None else types | t
        return cls(steps, None if types is None else frozenset(types), by,
                   parse_duration(spec.get("within", "60s")), BoundedState(max_entries))

    def _anchor(self, e: Event) -> Any:
        """What a first step ties later steps to: the process, its creator
        (for a tree), or nothing (host)."""
        p = e["proc"]
        if self.by == "host":
            return None
        if self.by == "tree":
            return (p.get("parent") or {}).get("exec_id") or p.get("exec_id")
        return p.get("exec_id")

    def _scope_ids(self, e: Event) -> list[Any]:
        """The anchors a later step may continue: its own, and for a tree
        every ancestor's."""
        p = e["proc"]
        if self.by == "host":
            return [None]
        if self.by == "process":
            return [p.get("exec_id")]
        return [p.get("exec_id"), *(a.get("exec_id") for a in p.get("ancestors") or [])]

    def feed(self, e: Event) -> list[Event] | None:
        """Advance partial matches with e; the events of a completed match."""
        now = event_time(e)
        done: list[Event] | None = None
        for i in range(len(self.steps) - 1, -1, -1):
            pred, keyf = self.steps[i]
            if not pred(e):
                continue
            key = keyf(e) if keyf else None
            if i == 0:
                if keyf and key is None:
                    continue
                self.state.put((key, self._anchor(e)), (1, now, [e]))
                continue
            for sid in self._scope_ids(e):
                st = self.state.get((key, sid))
                if st is None or st[0] != i:
                    continue
                _, start, evs = st
                if now - start > self.within:
                    self.state.pop((key, sid))
                    self.state.expired += 1
                    continue
                if i == len(self.steps) - 1:
                    self.state.pop((key, sid))
                    done = [*evs, e]
                else:
                    self.state.put((key, sid), (i + 1, start, [*evs, e]))
                break
        return done


@dataclass
class Threshold:
    """More than `count` events (or distinct values of a field) per key
    within a sliding window. Fires once, then re-arms when the window
    empties."""

    by: list[Callable[[Event], Any]]
    distinct: Callable[[Event], Any] | None
    count: int
    within: float
    state: BoundedState

    @classmethod
    def build(cls, spec: dict[str, Any], dialect: str, max_entries: int) -> Threshold:
        if not isinstance(spec, dict) or "count" not in spec:
            raise ValueError("threshold: needs count: (and by:, within:, optionally distinct:)")
        by = spec.get("by") or []
        if isinstance(by, str):
            by = [by]
        count = spec["count"]
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"threshold: count: must be a positive integer, got {count!r}")
        return cls([_getter(str(b), dialect) for b in by],
                   _getter(str(spec["distinct"]), dialect) if spec.get("distinct") else None,
                   count, parse_duration(spec.get("within", "60s")), BoundedState(max_entries))

    def feed(self, e: Event) -> list[Event] | None:
        now = event_time(e)
        key = tuple(g(e) for g in self.by)
        st = self.state.get(key)
        if st is None:
            st = {"seen": OrderedDict(), "fired": False, "last": None}
            self.state.put(key, st)
        seen: OrderedDict[Any, float] = st["seen"]
        while seen and now - next(iter(seen.values())) > self.within:
            seen.popitem(last=False)
        if not seen:
            st["fired"] = False
        v = self.distinct(e) if self.distinct else (now, len(seen))
        seen[v] = now
        seen.move_to_end(v)
        # count + 1 values decide; more would only grow during a flood.
        while len(seen) > self.count + 1:
            seen.popitem(last=False)
        if len(seen) > self.count and not st["fired"]:
            st["fired"] = True
            return [e]
        return None


def build_state(rule: Any, max_entries: int) -> Sequence | Threshold | None:
    """The state of a stateful rule (a loader Rule); None for a plain one.
    ValueError names what is wrong with its sequence: or threshold: spec."""
    d = rule.definition
    if d.sequence is not None:
        return Sequence.build(d.sequence, rule.scope or Scope(dialect=d.dialect), max_entries)
    if d.threshold is not None:
        return Threshold.build(d.threshold, d.dialect, max_entries)
    return None
