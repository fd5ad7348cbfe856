"""Golden test: the recorded ring fixtures, decoded, enriched and encoded as
`ktrail run --format json` does, must give the committed JSON lines byte for byte.

It pins the output of the userspace pipeline so that a rewrite of it can be
checked against the code it replaces. `render` is the only place that knows
the pipeline's APIs: a refactor edits it, and nothing else here.

The expected files are tests/fixtures/<fixture>.jsonl. After an intended
change of the output, or a re-recorded fixture (tests/fixtures/record.py),
regenerate them and review the diff:

    KTRAIL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/unit/test_golden.py
    git diff tests/fixtures/

With the variable set the test writes the files and fails, saying so, so that
a run that rewrote them is never mistaken for a pass.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from fakeproc import FakeProc
from ringfixture import EVENTS, LIFECYCLE, read_fixture

from ktrail.decode.decoder import decode
from ktrail.decode.schema import EventType
from ktrail.engine.enrich import Enricher
from ktrail.loader.catalog import CATALOG
from ktrail.output.formats import JsonLines
from ktrail.process import ProcessTable, ProcFS, UserNames
from ktrail.units import Clock

UPDATE_ENV = "KTRAIL_UPDATE_GOLDEN"
# Fixed stand-ins for the host, so the output depends on the fixture alone.
USER_NAMES = {0: "root", 65534: "nobody"}
CLOCK_OFFSET_NS = 1_767_225_600 * 1_000_000_000  # boot time 0 = 2026-01-01T00:00:00Z


def render(fixture: Path, proc_root: Path) -> bytes:
    """A fixture's records as `ktrail run --format json` writes them:
    decode -> enrich -> encode, with `proc_root` (empty) as /proc."""
    table = ProcessTable(ProcFS(str(proc_root)), UserNames(lookup=USER_NAMES.get))
    clock = Clock()
    clock.offset_ns = CLOCK_OFFSET_NS
    events = Enricher(table, clock).process(decode(read_fixture(str(fixture))))
    return JsonLines().encode(events)


# What events.ring must hold (see record.py): every catalogue type this
# machine can produce from the scenario's own process tree.
EVENTS_TYPES = [
    "exec", "fork", "exit",
    "open", "create", "unlink", "rmdir", "rename", "link", "symlink", "chmod", "chown",
    "utimes", "truncate",
    "connect", "accept", "bind", "listen", "dns",
    "setsid", "prctl", "kill", "ptrace", "memfd_create", "exec_memory", "setuid",
    "privilege_escalation", "module_load", "bpf", "mount", "umount", "namespace",
    "io_uring",
]
# Catalogue types no ring fixture of a scenario's process tree can hold.
NOT_RECORDED = {
    "device": "read from the kernel's uevent netlink socket, never from the BPF ring",
    "usermode_helper": "a program the kernel starts: its parent is a kernel thread, "
                       "outside the scenario's process tree",
    "process_vm": "needs a second process to read or write; recorded with its target by "
                  "tests/integration/test_other_doors.py instead of growing the golden scenario",
}


def first_difference(expected: bytes, actual: bytes) -> str:
    """Where two outputs part, line by line: a full diff of JSON lines is unreadable."""
    exp, act = expected.splitlines(), actual.splitlines()
    for n, (e, a) in enumerate(zip(exp, act, strict=False), 1):
        if e != a:
            short = min(len(e), len(a))
            col = next((i for i in range(short) if e[i] != a[i]), short)  # in bytes
            return (f"first difference at line {n}, column {col + 1}:\n"
                    f"  expected: {e.decode('utf-8', 'backslashreplace')}\n"
                    f"  actual:   {a.decode('utf-8', 'backslashreplace')}")
    if len(exp) != len(act):
        n = min(len(exp), len(act)) + 1
        longer, name = (exp, "expected") if len(exp) > len(act) else (act, "actual")
        return (f"expected {len(exp)} lines, got {len(act)}; line {n} is only in {name}:\n"
                f"  {longer[n - 1].decode('utf-8', 'backslashreplace')}")
    return "the lines are the same; the line endings differ"


@pytest.mark.parametrize("fixture", [LIFECYCLE, EVENTS], ids=lambda p: p.stem)
def test_json_output_is_unchanged(fixture: Path, tmp_path: Path) -> None:
    actual = render(fixture, Path(FakeProc(tmp_path / "proc").path))
    golden = fixture.with_suffix(".jsonl")
    if os.environ.get(UPDATE_ENV) == "1":
        golden.write_bytes(actual)
        pytest.fail(f"{UPDATE_ENV}=1: wrote {golden} ({len(actual.splitlines())} lines); "
                    f"review it, then run again without {UPDATE_ENV}", pytrace=False)
    if not golden.exists():
        pytest.fail(f"{golden} is missing: {UPDATE_ENV}=1 writes it (see {__file__})",
                    pytrace=False)
    expected = golden.read_bytes()
    if actual != expected:
        # pytest.fail, not assert: pytest would add a diff of the whole outputs.
        pytest.fail(f"{golden.name}: the JSON output changed; "
                    f"{first_difference(expected, actual)}\n"
                    f"(if the change is intended, {UPDATE_ENV}=1 regenerates it)",
                    pytrace=False)


def fixture_types(fixture: Path) -> set[str]:
    # The type is the header's first u16 (bpf/ktrail.h): read it directly, so
    # this test does not depend on the decoder the golden test checks.
    raw = read_fixture(str(fixture))
    return {EventType(struct.unpack_from("<H", raw.buf, off)[0]).name.lower()
            for off in raw.offsets}


def test_events_fixture_has_every_intended_type() -> None:
    missing = sorted(set(EVENTS_TYPES) - fixture_types(EVENTS))
    assert not missing, (f"{EVENTS.name} has no {', '.join(missing)} record: re-record it "
                         "(tests/fixtures/record.py --scenario events)")


def test_every_catalogue_type_is_in_the_fixture_or_explained() -> None:
    # A new event type must be added to the events scenario, or here with why not.
    assert not set(EVENTS_TYPES) & NOT_RECORDED.keys()
    assert set(EVENTS_TYPES) | NOT_RECORDED.keys() == set(CATALOG)


def test_first_difference_names_the_line() -> None:
    assert first_difference(b"a\nbc\n", b"a\nbd\n") == (
        "first difference at line 2, column 2:\n  expected: bc\n  actual:   bd")
    assert first_difference(b"a\n", b"a\nb\n") == (
        "expected 1 lines, got 2; line 2 is only in actual:\n  b")
    assert first_difference(b"a\n", b"a") == (
        "the lines are the same; the line endings differ")


def test_text_output_shows_each_types_telling_detail(tmp_path: Path) -> None:
    """`--format text` names what each event was about: paths, addresses,
    DNS names, targets (one summary per type, from the registry)."""
    from ktrail.events.registry import summary
    from ktrail.output.formats import Text

    table = ProcessTable(ProcFS(str(tmp_path)), UserNames(lookup=USER_NAMES.get))
    events = Enricher(table, Clock()).process(decode(read_fixture(str(EVENTS))))
    text = Text()
    lines: dict[str, list[str]] = {}
    for e in events:
        detail = summary(e)
        assert detail.strip(), f"{e['evt']['type']} has no detail in text output"
        line = text.line(e)
        assert line.endswith(detail)
        lines.setdefault(e["evt"]["type"], []).append(line)
    assert set(lines) == set(EVENTS_TYPES)
    joined = {t: "\n".join(ls) for t, ls in lines.items()}
    assert " -> " in joined["rename"] and " -> " in joined["symlink"]
    assert "golden.ktrail.test A" in joined["dns"]
    assert "127.0.0.1:" in joined["connect"] and "(ECONNREFUSED)" in joined["connect"]
    assert "SIG" in joined["kill"] and "PTRACE_ATTACH" in joined["ptrace"]
    assert "IORING_OP_OPENAT /" in joined["io_uring"]
    assert " on " in joined["mount"] and "CLONE_NEW" in joined["namespace"]
