"""The detection stage of the run loop: rules over each enriched batch.

Rules see every event the sensor decoded (before the --pid/--comm/--uid
output filters, which are for people reading the stream). SIGHUP reloads
the rule files between batches; a file that does not load leaves the old
rules running and says why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from ktrail.rules.engine import Engine
from ktrail.rules.loader import RuleFileError, RuleSet, load

Event = dict[str, Any]


class RulesError(ValueError):
    pass


def load_ruleset(files: list[str | Path]) -> RuleSet:
    """Rules for `ktrail run`: a mistake in any file is an error, since an
    operator who asked for a rule and silently did not get it is worse off
    than one who is told."""
    try:
        rs = load(files)
    except RuleFileError as e:
        raise RulesError(str(e)) from None
    if rs.problems:
        raise RulesError("rules that do not load:\n  " + "\n  ".join(map(str, rs.problems)))
    return rs


class Detector:
    def __init__(self, files: list[str | Path], warn: TextIO = sys.stderr,
                 max_state: int = 10000) -> None:
        self.files = files
        self.warn = warn
        self.max_state = max_state
        self.engine = Engine(load_ruleset(files), max_state=max_state)
        self.reloads = 0
        self.reload_errors = 0
        self.reload_wanted = False

    def request_reload(self, *_: Any) -> None:
        """Signal-safe: the reload happens between batches."""
        self.reload_wanted = True

    def maybe_reload(self) -> None:
        if not self.reload_wanted:
            return
        self.reload_wanted = False
        try:
            rs = load_ruleset(self.files)
        except RulesError as e:
            self.reload_errors += 1
            print(f"ktrail: warning: rules not reloaded, the old rules stay: {e}",
                  file=self.warn, flush=True)
            return
        old = self.engine
        self.engine = Engine(rs, max_state=self.max_state)
        self.engine.alerts_total = old.alerts_total
        self.reloads += 1
        print(f"ktrail: rules reloaded: {len(rs.rules)} rules", file=self.warn, flush=True)

    def process(self, events: list[Event]) -> list[Event]:
        return self.engine.process(events) if events else []

    def stats(self) -> dict[str, Any]:
        e = self.engine
        return {
            "rules": len(e.ruleset.rules),
            "alerts": e.alerts_total,
            "shadow_hits": dict(e.shadow_hits),
            "state": e.state_stats(),
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
        }
