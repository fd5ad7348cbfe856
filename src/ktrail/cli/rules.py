"""`ktrail rules check|test|profile` and `ktrail replay`."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from ktrail.cli.errors import EXIT_ERROR, CliError
from ktrail.engine.detect import RulesError, load_ruleset
from ktrail.output.formats import dumps
from ktrail.rules import DEFAULT_RULES, DEFAULT_TESTS
from ktrail.rules.engine import Engine
from ktrail.rules.loader import RuleFileError, RuleSet, load
from ktrail.rules.testing import TestFileError, load_tests, run_tests
from ktrail.rules.trail import BadLine, Trail
from ktrail.strings import printable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rules", help="check, test and profile detection rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)

    c = rsub.add_parser("check", help="validate rule files (FILE:LINE:COL for each mistake)")
    c.add_argument("files", nargs="*", metavar="FILE",
                   help="rule files, loaded in order (default: the default rules)")
    c.add_argument("--falco", action="store_true",
                   help="read the files as Falco rules and list every rule that cannot "
                        "load, with the unsupported field or construct")
    c.set_defaults(func=check)

    t = rsub.add_parser("test", help="run the rules' YAML test cases")
    t.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="rule files (default: the default rules)")
    t.add_argument("tests", nargs="*", metavar="TESTS",
                   help="test files (default: the default rules' tests)")
    t.set_defaults(func=test)

    pr = rsub.add_parser("profile", help="cost per rule over a recorded trail (JSON lines)")
    pr.add_argument("trail", metavar="TRAIL.jsonl")
    pr.add_argument("--rules", action="append", default=[], metavar="FILE")
    pr.add_argument("--top", type=int, default=20, metavar="N")
    pr.set_defaults(func=profile)

    r = sub.add_parser("replay", help="run the rules over a recorded trail and print alerts")
    r.add_argument("trail", metavar="TRAIL.jsonl")
    r.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="rule files (default: the default rules)")
    r.add_argument("--strict", action="store_true",
                   help="stop at the first line that is not an event (exit code 1) instead "
                        "of reporting it and going on")
    r.set_defaults(func=replay)


def load_rules(files: list[str]) -> RuleSet:
    """Rules to run (test, replay, profile): any rule that does not load is
    an error, as in `ktrail run`."""
    try:
        return load_ruleset(list(files) or [DEFAULT_RULES])
    except RulesError as e:
        raise CliError(str(e)) from None


def check(args: argparse.Namespace) -> int:
    try:
        rs = load(args.files or [DEFAULT_RULES], dialect="falco" if args.falco else None)
    except RuleFileError as e:
        raise CliError(str(e)) from None
    out = sys.stdout
    for p in rs.problems:
        extra = f" [unsupported: {p.unsupported}]" if p.unsupported else ""
        out.write(f"{p}{extra}\n")
    total = len(rs.rules) + len(rs.problems)
    out.write(f"{len(rs.rules)} of {total} enabled rules load"
              f" ({len(rs.disabled)} disabled, {len(rs.problems)} with problems)\n")
    if args.falco:
        return 0
    return EXIT_ERROR if rs.problems else 0


def test(args: argparse.Namespace) -> int:
    rs = load_rules(args.rules)
    files = args.tests or [str(DEFAULT_TESTS)]
    failed = 0
    total = 0
    for f in files:
        try:
            results = run_tests(rs, load_tests(f))
        except TestFileError as e:
            raise CliError(str(e)) from None
        except OSError as e:  # a directory, a missing or unreadable file
            raise CliError(f"{f}: {e.strerror or e}") from None
        for r in results:
            total += 1
            if not r.ok:
                failed += 1
                # The detail quotes the test's event: one line, escaped.
                print(printable(f"FAIL {r.rule} [{r.kind} #{r.index}]: {r.detail}"))
        tested = {r.rule for r in results}
        for rule in rs.rules:
            if not args.rules and rule.name not in tested:
                failed += 1
                print(f"FAIL {rule.name}: no test case")
    print(f"{total - failed} of {total} cases pass")
    return EXIT_ERROR if failed else 0


MAX_REPORTED = 10  # bad lines shown one by one; the rest are counted


class _Reporter:
    """Bad lines of a trail on stderr: the first MAX_REPORTED, then a count."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.shown = 0

    def __call__(self, number: int, why: str) -> None:
        if self.shown < MAX_REPORTED:
            self.shown += 1
            print(f"ktrail: warning: {self.path}:{number}: {why}; skipped", file=sys.stderr)

    def finish(self, trail: Trail) -> str:
        """The summary's words about bad lines."""
        if trail.bad > self.shown:
            print(f"ktrail: warning: {self.path}: {trail.bad - self.shown} more bad lines "
                  "not shown", file=sys.stderr)
        return f", {trail.bad} bad lines skipped" if trail.bad else ""


@contextlib.contextmanager
def _trail(path: str, strict: bool) -> Iterator[tuple[Trail, _Reporter]]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None
    reporter = _Reporter(path)
    with f:
        try:
            yield Trail(f, reporter, strict=strict), reporter
        except BadLine as e:
            raise CliError(f"{path}:{e.number}: {e.why} (--strict)", code=EXIT_ERROR) \
                from None
        except OSError as e:  # EIO, or a directory (read() fails, open() does not)
            raise CliError(f"{path}: {e.strerror}") from None


def replay(args: argparse.Namespace) -> int:
    engine = Engine(load_rules(args.rules))
    out = sys.stdout.buffer
    n = 0
    batch: list[dict[str, Any]] = []
    with _trail(args.trail, args.strict) as (trail, reporter):
        for e in trail:
            batch.append(e)
            if len(batch) >= 1024:
                for a in engine.process(batch):
                    out.write(dumps(a) + b"\n")
                batch.clear()
            n += 1
        for a in engine.process(batch):
            out.write(dumps(a) + b"\n")
        bad = reporter.finish(trail)
    print(f"ktrail: {n} events replayed, {engine.alerts_total} alerts{bad}", file=sys.stderr)
    return 0


def profile(args: argparse.Namespace) -> int:
    engine = Engine(load_rules(args.rules), profile=True)
    with _trail(args.trail, strict=False) as (trail, reporter):
        events = list(trail)
        reporter.finish(trail)
    t0 = time.perf_counter()
    engine.process(events)
    dt = time.perf_counter() - t0
    rows = sorted(engine.stats.items(), key=lambda kv: kv[1].ns, reverse=True)
    print(f"{len(events)} events in {dt:.3f} s ({len(events) / dt if dt else 0:,.0f} events/s)")
    print(f"{'rule':60} {'evaluated':>10} {'matched':>8} {'ns/eval':>8} {'total ms':>9}")
    for name, st in rows[: args.top]:
        per = st.ns / st.evaluated if st.evaluated else 0
        print(f"{name[:60]:60} {st.evaluated:>10} {st.matched:>8} {per:>8.0f} "
              f"{st.ns / 1e6:>9.2f}")
    return 0

