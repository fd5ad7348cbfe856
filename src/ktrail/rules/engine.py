"""Evaluating rules on the event stream: an index by event type, stateful
rules (sequences, thresholds) with bounded state, shadow counting, alerts.

An event meets only the rules whose conditions can match its type (the
compiler works that out from `evt.type` tests), plus the few rules that do
not narrow the type.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ktrail.rules import fields as F
from ktrail.rules.loader import Rule, RuleSet
from ktrail.rules.state import Sequence, Threshold, build_state

Event = dict[str, Any]

@dataclass
class RuleStats:
    evaluated: int = 0
    matched: int = 0
    ns: int = 0


@dataclass
class Engine:
    ruleset: RuleSet
    profile: bool = False
    max_state: int = 10000
    by_type: dict[str, list[Rule]] = field(default_factory=dict)
    any_type: list[Rule] = field(default_factory=list)
    stats: dict[str, RuleStats] = field(default_factory=dict)
    shadow_hits: dict[str, int] = field(default_factory=dict)
    state: dict[str, Sequence | Threshold] = field(default_factory=dict)
    alerts_total: int = 0

    def __post_init__(self) -> None:
        for r in self.ruleset.rules:
            # State belongs to this engine, not to the shared rule: a reload
            # or a test case starts from empty state.
            st = build_state(r, self.max_state)
            if st is not None:
                self.state[r.name] = st
            types = r.match.types
            if isinstance(st, Sequence) and st.types is not None:
                types = st.types if types is None else types & st.types
            if types is None:
                self.any_type.append(r)
            else:
                for t in types:
                    self.by_type.setdefault(t, []).append(r)
            self.stats[r.name] = RuleStats()
        for t in self.by_type:
            self.by_type[t].extend(self.any_type)

    def rules_for(self, etype: str) -> list[Rule]:
        return self.by_type.get(etype, self.any_type)

    def process(self, events: Iterable[Event]) -> list[Event]:
        alerts: list[Event] = []
        for e in events:
            etype = e["evt"]["type"]
            if etype in ("stats", "heartbeat", "alert"):
                continue
            for r in self.by_type.get(etype, self.any_type):
                if self.profile:
                    t0 = time.perf_counter_ns()
                    hit = self._eval(r, e)
                    st = self.stats[r.name]
                    st.ns += time.perf_counter_ns() - t0
                    st.evaluated += 1
                else:
                    hit = self._eval(r, e)
                if hit is None:
                    continue
                self.stats[r.name].matched += 1
                if r.shadow:
                    self.shadow_hits[r.name] = self.shadow_hits.get(r.name, 0) + 1
                    continue
                alerts.append(make_alert(r, hit))
                self.alerts_total += 1
        return alerts

    def _eval(self, r: Rule, e: Event) -> list[Event] | None:
        if not r.match.predicate(e):
            return None
        st = self.state.get(r.name)
        return [e] if st is None else st.feed(e)

    def state_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, st in self.state.items():
            out[name] = st.state.stats()
        return out


def render(template: str, e: Event, dialect: str) -> str:
    def sub(m: re.Match[str]) -> str:
        try:
            v = F.resolve(m.group(1), dialect)(e)
        except F.UnknownField:
            return "<NA>"
        if v is None:
            return "<NA>"
        if isinstance(v, list):
            return " ".join(str(x) for x in v)
        return str(v)
    return F.TEMPLATE_FIELD.sub(sub, template)


def make_alert(r: Rule, events: list[Event]) -> Event:
    last = events[-1]
    text = render(r.output, last, r.definition.dialect) if r.output else r.name
    return {
        "evt": {"type": "alert", "time": last["evt"].get("time")},
        "alert": {
            "rule": r.name,
            "priority": r.priority,
            "tags": r.tags,
            "mitre": r.mitre,
            "output": text,
            "events": events,
        },
        "proc": last.get("proc"),
        "user": last.get("user"),
        "container": last.get("container"),
    }
