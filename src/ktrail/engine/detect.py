"""The detection stage of the run loop: rules over each enriched batch.

Rules see every event the sensor decoded (before the --pid/--comm/--uid
output filters, which are for people reading the stream).

SIGHUP reloads the rule files in the background: a thread reads and
compiles them while the loop goes on with the old rules, and the loop
switches to the new set between two batches, only once it has compiled. A
file that does not load leaves the old rules running and says why. A stop
(SIGTERM, --duration) abandons a reload in flight: the thread gives up at
its next checkpoint, and as a daemon it never holds up the exit.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from ktrail.rules.engine import Engine
from ktrail.rules.loader import RuleFileError, RuleSet, load
from ktrail.strings import printable

Event = dict[str, Any]

# The reload thread pauses this long at each checkpoint (every few dozen
# YAML entries or rules): the GIL goes to the event loop whenever it wants
# it, rather than after the interpreter's 5 ms switch interval, each time
# the loop comes back from a system call. The reload takes longer; the
# stream does not stall.
RELOAD_PAUSE_S = 0.001


class RulesError(ValueError):
    pass


class ReloadAbandoned(Exception):
    """Raised inside the reload thread when the run stops under it."""


def load_ruleset(files: list[str | Path], checkpoint: Any = None) -> RuleSet:
    """Rules for `ktrail run`: a mistake in any file is an error, since an
    operator who asked for a rule and silently did not get it is worse off
    than one who is told."""
    try:
        rs = load(files, checkpoint=checkpoint)
    except RuleFileError as e:
        raise RulesError(str(e)) from None
    if rs.problems:
        raise RulesError("rules that do not load:\n  " + "\n  ".join(map(str, rs.problems)))
    return rs


class _Reload:
    """One reload, run by a daemon thread: its result is read by the loop."""

    def __init__(self, files: list[str | Path], max_state: int, pause_s: float) -> None:
        self.files = files
        self.max_state = max_state
        self.pause_s = pause_s
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.engine: Engine | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="ktrail-rules-reload",
                                       daemon=True)

    def _checkpoint(self) -> None:
        if self.cancelled.is_set():
            raise ReloadAbandoned
        if self.pause_s:
            time.sleep(self.pause_s)

    def _run(self) -> None:
        try:
            rs = load_ruleset(self.files, checkpoint=self._checkpoint)
            self._checkpoint()
            self.engine = Engine(rs, max_state=self.max_state)
        except ReloadAbandoned:
            pass
        except RulesError as e:
            self.error = str(e)
        except Exception as e:   # a reload must never kill the sensor: it warns
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()


class Detector:
    def __init__(self, files: list[str | Path], warn: TextIO = sys.stderr,
                 max_state: int = 10000, reload_pause_s: float = RELOAD_PAUSE_S) -> None:
        self.files = files
        self.warn = warn
        self.max_state = max_state
        self.reload_pause_s = reload_pause_s
        self.engine = Engine(load_ruleset(files), max_state=max_state)
        self.reloads = 0
        self.reload_errors = 0
        self.reloads_abandoned = 0
        self.reload_wanted = False
        self._reload: _Reload | None = None

    def request_reload(self, *_: Any) -> None:
        """Signal-safe: the loop starts the reload between batches."""
        self.reload_wanted = True

    @property
    def reloading(self) -> bool:
        return self._reload is not None

    def maybe_reload(self) -> None:
        """Between batches: switch to a reload's rules once they have
        compiled, and start the reload a SIGHUP asked for. A SIGHUP during a
        reload starts another one after it (the files may have changed
        again since it read them)."""
        job = self._reload
        if job is not None and job.done.is_set():
            self._reload = None
            self._finish(job)
        if self.reload_wanted and self._reload is None:
            self.reload_wanted = False
            self._reload = _Reload(self.files, self.max_state, self.reload_pause_s)
            self._reload.thread.start()

    def _finish(self, job: _Reload) -> None:
        if job.engine is None:
            self.reload_errors += 1
            why = printable(str(job.error))  # it may quote a line of the file
            print(f"ktrail: warning: rules not reloaded, the old rules stay: {why}",
                  file=self.warn, flush=True)
            return
        old, new = self.engine, job.engine
        new.alerts_total = old.alerts_total
        self.engine = new    # one assignment: the next batch meets the new rules
        self.reloads += 1
        print(f"ktrail: rules reloaded: {len(new.ruleset.rules)} rules (in "
              f"{time.monotonic() - job.started:.1f} s)", file=self.warn, flush=True)

    def close(self) -> None:
        """The run is ending: abandon a reload in flight, without waiting."""
        job, self._reload = self._reload, None
        if job is not None and not job.done.is_set():
            job.cancelled.set()
            self.reloads_abandoned += 1
            print("ktrail: warning: rules reload abandoned: the run is ending",
                  file=self.warn, flush=True)

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
            "reloads_abandoned": self.reloads_abandoned,
            "reloading": self.reloading,
        }
