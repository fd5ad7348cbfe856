"""Rule test cases: YAML files of events that must, or must not, raise a rule.

    - rule: NAME
      fires: [CASE...]
      quiet: [CASE...]

A case is an event (only the fields that matter), or `{events: [...]}` for
stateful rules, or `{events: {repeat: N, event: {...}}}` where "{i}" in a
string becomes the repetition number (as an int when that is all it holds).
Missing fields are filled the way the sensor fills them.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ktrail import safeyaml
from ktrail.rules.engine import Engine
from ktrail.rules.loader import RuleSet

BASE_TIME = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class TestFileError(ValueError):
    pass


@dataclass
class CaseResult:
    rule: str
    kind: str        # "fires" or "quiet"
    index: int
    ok: bool
    detail: str = ""


def _subst(obj: Any, i: int) -> Any:
    if isinstance(obj, str) and "{i}" in obj:
        s = obj.replace("{i}", str(i))
        return int(s) if s.isdigit() else s
    if isinstance(obj, dict):
        return {k: _subst(v, i) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_subst(v, i) for v in obj]
    return obj


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def complete(partial: dict[str, Any], n: int) -> dict[str, Any]:
    """A full event from the fields a test gives; n orders events in time."""
    t = BASE_TIME + datetime.timedelta(milliseconds=10 * n)
    proc = partial.get("proc") or {}
    exe = proc.get("exe") or f"/usr/bin/{proc.get('name', 'test')}"
    name = proc.get("name") or exe.rsplit("/", 1)[-1]
    base: dict[str, Any] = {
        "evt": {"type": "exec", "time": t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z",
                "seq": n + 1, "cpu": 0},
        "proc": {"pid": 100 + n, "tid": 100 + n, "ppid": 1, "comm": name[:15],
                 "uid": 0, "gid": 0, "exec_id": f"{100 + n}:1", "exe": exe, "name": name,
                 "args": [name], "cwd": "/", "source": "exec", "parent": None,
                 "ancestors": []},
        "user": {"uid": 0, "name": "root"},
        "container": None,
    }
    event = _merge(base, copy.deepcopy(partial))
    event["evt"]["time"] = base["evt"]["time"]
    p = event["proc"]
    if p.get("parent") and not p.get("ancestors"):
        p["ancestors"] = [p["parent"]]
    return event


def case_events(case: Any) -> list[dict[str, Any]]:
    if isinstance(case, dict) and "events" in case:
        evs = case["events"]
        if isinstance(evs, dict) and "repeat" in evs:
            evs = [_subst(evs["event"], i) for i in range(1, int(evs["repeat"]) + 1)]
        if not isinstance(evs, list):
            raise TestFileError("events: must be a list or {repeat: N, event: {...}}")
        return [complete(e, i) for i, e in enumerate(evs)]
    if not isinstance(case, dict):
        raise TestFileError(f"a test case is a mapping (an event), got {case!r}")
    return [complete(case, 0)]


def load_tests(path: str | Path) -> list[dict[str, Any]]:
    try:
        data = safeyaml.load(safeyaml.read(path), str(path))
    except safeyaml.YamlError as e:
        raise TestFileError(str(e)) from None
    if not isinstance(data, list):
        raise TestFileError(f"{path}: a test file is a list of {{rule, fires, quiet}}")
    for n, entry in enumerate(data, 1):
        if not isinstance(entry, dict) or "rule" not in entry:
            raise TestFileError(f"{path}: entry {n}: a mapping with rule: and fires: or quiet:")
        for kind in ("fires", "quiet"):
            if not isinstance(entry.get(kind) or [], list):
                raise TestFileError(f"{path}: entry {n} ({entry['rule']}): {kind}: is a list "
                                    "of cases")
    return data


def run_tests(ruleset: RuleSet, tests: list[dict[str, Any]]) -> list[CaseResult]:
    names = {r.name for r in ruleset.rules}
    results: list[CaseResult] = []
    for entry in tests:
        rule = entry.get("rule")
        if rule not in names:
            results.append(CaseResult(str(rule), "fires", 0, False,
                                      "no such rule is loaded"))
            continue
        for kind in ("fires", "quiet"):
            for i, case in enumerate(entry.get(kind) or [], 1):
                engine = Engine(ruleset)  # fresh state per case
                alerts = engine.process(case_events(case))
                hit = [a for a in alerts if a["alert"]["rule"] == rule]
                ok = bool(hit) if kind == "fires" else not hit
                detail = "" if ok else (
                    "expected an alert, got none" if kind == "fires"
                    else f"unexpected alert: {hit[0]['alert']['output']}")
                results.append(CaseResult(rule, kind, i, ok, detail))
    return results
