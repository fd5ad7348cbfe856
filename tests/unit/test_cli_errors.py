"""Issue 12, findings 7 and 8: every mistake in the input is one line naming
it (option, FILE:LINE, path), with the exit code of cli/errors.py; never a
traceback. In-process, never touching the kernel (the machine-facing calls
of `ktrail run` are replaced, as in test_cli.py)."""

from __future__ import annotations

import errno
import io
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from storeevents import NS, World

from ktrail.cli import main as main_mod
from ktrail.cli import run as run_cmd
from ktrail.cli.errors import EXIT_ENV, EXIT_ERROR
from ktrail.config import ConfigError
from ktrail.config import parse as parse_config
from ktrail.loader import features
from ktrail.loader.sensor import SensorError
from ktrail.store.writer import StoreWriter
from ktrail.units import TimeSyntaxError, parse_duration, parse_when

RunCli = Callable[[list[str]], tuple[int, str, str]]
FIXTURES = Path(__file__).parent.parent / "fixtures"
GUARD = "test guard: the kernel was about to be touched"


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append("kernel")
        raise AssertionError(GUARD)
    monkeypatch.setattr(features, "preflight", lambda: [GUARD])
    monkeypatch.setattr(features, "ensure_tracefs", refuse)
    monkeypatch.setattr(run_cmd, "build", refuse)
    return calls


def one_error(code: int, err: str, want_code: int, *needles: str) -> None:
    assert code == want_code, err
    assert err.startswith("ktrail: error: "), err
    assert err.count("\n") == 1, err
    for n in needles:
        assert n in err, (n, err)


# ---- a store to read, and broken ones ----------------------------------------------


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shell that started 600 processes: enough pages to damage some."""
    path = tmp_path_factory.mktemp("store") / "trail.db"
    w = World(start_ns=1_800_000_000 * NS)
    sh = w.process(4000, "/usr/bin/bash", ["bash"], uid=1000)
    evs = []
    for i in range(600):
        fork, c = w.fork(sh, 5000 + i)
        evs += [fork, w.exec(c, "/usr/bin/curl", ["curl", "http://10.1.2.3/" + "x" * 200]),
                w.connect(c, "10.1.2.3", 80), w.exit(c)]
    st = StoreWriter(str(path), warn=io.StringIO())
    st.start()
    st.submit(evs)
    st.close()
    return path


def _truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 9 // 10])


def _pages_overwritten(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    # Past the schema pages, in the middle of the tables and indexes.
    start = len(data) // 3
    data[start:start + 40 * 4096] = os.urandom(40 * 4096)
    dst.write_bytes(bytes(data))


def _tables_dropped(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())
    conn = sqlite3.connect(dst)
    conn.execute("DROP VIEW events")
    conn.execute("DROP TABLE processes")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("damage", [_truncated, _pages_overwritten, _tables_dropped])
def test_tree_on_a_damaged_store_is_one_line(damage: Callable[[Path, Path], None],
                                             good_store: Path, tmp_path: Path,
                                             run_cli: RunCli) -> None:
    bad = tmp_path / "bad.db"
    damage(good_store, bad)
    code, out, err = run_cli(["tree", "4000", "--store", str(bad)])
    one_error(code, err, EXIT_ENV, f"store {bad}: ")
    assert "corrupt" in err or "not a complete ktrail store" in err
    assert out == ""


def test_query_on_a_damaged_store_is_one_line(good_store: Path, tmp_path: Path,
                                              run_cli: RunCli) -> None:
    bad = tmp_path / "bad.db"
    _pages_overwritten(good_store, bad)
    code, _, err = run_cli(["query", "--store", str(bad), "--limit", "0"])
    one_error(code, err, EXIT_ERROR, f"store {bad}: the store file is corrupt")


def test_tree_on_the_good_store_still_works(good_store: Path, run_cli: RunCli) -> None:
    code, out, _ = run_cli(["tree", "4000", "--store", str(good_store), "--max-nodes", "3"])
    assert code == 0 and "bash(4000)" in out


# ---- huge numbers -------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["query", "--since", "99999999999d"], EXIT_ENV, "--since: '99999999999d' is too long"),
    (["query", "--since", "9" * 400 + "s"], EXIT_ENV, "--since"),
    (["query", "--since", "@1e30"], EXIT_ENV, "--since: '@1e30' is out of range"),
    (["query", "--since", "@inf"], EXIT_ENV, "--since"),
    (["query", "--until", "9999-12-31"], EXIT_ENV, "--until: '9999-12-31' is out of range"),
    (["query", "--limit", "99999999999999999999"], EXIT_ENV, "--limit"),
    (["query", "--user", "99999999999999999999"], EXIT_ENV, "--user"),
    (["query", "--timeout", "-1", "select 1"], EXIT_ENV, "--timeout"),
    (["query", "--timeout", "nan", "select 1"], EXIT_ENV, "--timeout"),
    (["tree", "99999999999999999999"], EXIT_ERROR, "pid 99999999999999999999 is out of range"),
    (["tree", "0"], EXIT_ERROR, "out of range"),
    (["tree", "\u00b2"], EXIT_ERROR, "neither an exec_id"),   # '²'.isdigit() is True
    (["tree", "4000", "--events", "99999999999999999999"], EXIT_ENV, "--events"),
    (["tree", "4000", "--max-nodes", "99999999999999999999"], EXIT_ENV, "--max-nodes"),
])
def test_huge_and_odd_numbers_are_one_line(argv: list[str], code: int, needle: str,
                                           good_store: Path, run_cli: RunCli) -> None:
    got, out, err = run_cli([*argv, "--store", str(good_store)])
    one_error(got, err, code, needle)
    assert out == ""


def test_user_given_as_a_non_ascii_digit_is_a_name(good_store: Path, run_cli: RunCli) -> None:
    code, out, err = run_cli(["query", "--user", "\u00b2", "--store", str(good_store)])
    assert code == 0 and out == "", err


def test_sql_time_helpers_take_any_number(good_store: Path, run_cli: RunCli) -> None:
    code, out, err = run_cli(["query", "--store", str(good_store), "select rfc3339(1e300) a, "
                              "rfc3339('x') b, ns('99999999999d') c, rfc3339(0) d"])
    assert code == 0, err
    assert orjson.loads(out) == {"a": None, "b": None, "c": None,
                                 "d": "1970-01-01T00:00:00.000000000Z"}


def test_time_bounds_in_units() -> None:
    with pytest.raises(TimeSyntaxError, match="too long"):
        parse_duration("9" * 400 + "s")
    with pytest.raises(TimeSyntaxError, match="out of range"):
        parse_when("10000w", now_ns=-8 * 10**18)   # before 1678
    assert parse_when("1h", now_ns=10 * 3600 * NS) == 9 * 3600 * NS


# ---- the query timeout --------------------------------------------------------------

ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c")


def test_a_query_past_its_timeout_is_stopped_with_one_line(good_store: Path,
                                                           run_cli: RunCli) -> None:
    # Without a limit this never ends; the test's own timeout would be the only stop.
    code, out, err = run_cli(["query", "--store", str(good_store), "--timeout", "0.5",
                              ENDLESS])
    one_error(code, err, EXIT_ERROR, "time limit of 0.5 s", "--timeout")
    assert out == ""


def test_the_timeout_does_not_stop_ordinary_queries(good_store: Path,
                                                    run_cli: RunCli) -> None:
    code, out, err = run_cli(["query", "--store", str(good_store), "--timeout", "0.5",
                              "select count(*) n from events"])
    assert code == 0, err
    assert orjson.loads(out) == {"n": 2400}


def test_the_default_timeout_applies(good_store: Path, run_cli: RunCli,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ktrail.cli import query as query_cmd
    monkeypatch.setattr(query_cmd, "DEFAULT_TIMEOUT_S", 0.3)
    # The default is read when the parser is built, in main().
    code, _, err = run_cli(["query", "--store", str(good_store), ENDLESS])
    one_error(code, err, EXIT_ERROR, "time limit of 0.3 s")


# ---- ktrail run: ranges -------------------------------------------------------------


@pytest.mark.parametrize(("argv", "needle"), [
    (["--uid", "-7"], "--uid -7: out of range (allowed: 0 to 4294967294)"),
    (["--uid", "4294967295"], "--uid 4294967295: out of range"),
    (["--pid", "99999999999999999999"], "--pid 99999999999999999999: out of range "
                                        "(allowed: 1 to 4194304)"),
    (["--pid", "0"], "--pid 0: out of range"),
    (["--pid", "-1"], "--pid -1: out of range"),
    (["--ring-size", "64G"], "--ring-size 64G: the kernel's ring buffer holds at most 2G"),
    (["--ring-size", "99999999999999999999G"], "--ring-size"),
    (["--max-procs", "99999999999999999999"], "--max-procs"),
    (["--rotate-keep", "99999999999999999999"], "--rotate-keep"),
    (["--heartbeat-interval", "-1"], "--heartbeat-interval must be 0 or more seconds"),
    (["--heartbeat-interval", "inf"], "--heartbeat-interval must be 0 or more seconds"),
    (["--stall-threshold", "0.5"], "--stall-threshold must be 0 (off) or at least 1 second"),
    (["--stall-threshold", "nan"], "--stall-threshold must be 0 (off) or at least 1 second"),
])
def test_run_ranges(argv: list[str], needle: str, run_cli: RunCli,
                    no_kernel: list[str]) -> None:
    code, out, err = run_cli(["run", "--no-store", *argv])
    assert out == ""
    one_error(code, err, EXIT_ENV, needle)
    assert no_kernel == []


def test_a_ring_the_kernel_cannot_allocate_names_the_option(
        monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, tmp_path: Path) -> None:
    monkeypatch.setattr(features, "preflight", lambda: [])
    monkeypatch.setattr(features, "ensure_tracefs", lambda: "/sys/kernel/tracing")

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise SensorError("loading: Cannot allocate memory", errno=errno.ENOMEM)
    monkeypatch.setattr(run_cmd, "build", no_memory)
    code, _, err = run_cli(["run", "--no-store", "--no-rules", "--ring-size", "1G",
                            "--output", str(tmp_path / "out.jsonl")])
    one_error(code, err, EXIT_ENV, "--ring-size 1G", "1024 MiB", "Cannot allocate memory")


@pytest.mark.parametrize(("text", "where", "needle"), [
    ("ignore:\n  pids: [1, 99999999999999999999]\n", "c.yaml:2:13", "ignore.pids"),
    ("ignore:\n  pids: [0]\n", "c.yaml:2:10", "ignore.pids: 0 is out of range"),
    ("ignore:\n  uids: [-7]\n", "c.yaml:2:10", "ignore.uids: -7 is out of range"),
    ("ignore:\n  uids: [4294967295]\n", "c.yaml:2:10", "ignore.uids"),
    ("store:\n  max_size: 1M\n", "c.yaml:2:13", "store.max_size must be at least 4M"),
    ("store:\n  retain: 99999999999d\n", "c.yaml:2:11", "store.retain"),
    ('store:\n  path: "/var/x\\0.db"\n', "c.yaml:2:9", "store.path: a NUL character"),
    ('rules: ["/etc/r\\0.yaml"]\n', "c.yaml:1:9", "rules: a NUL character"),
])
def test_config_ranges_name_file_line_column(text: str, where: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml")
    assert str(e.value).startswith(where + ": "), str(e.value)
    assert needle in str(e.value)


# ---- the top-level guard ------------------------------------------------------------


def test_an_unexpected_exception_is_one_line_with_a_hint(
        monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, good_store: Path) -> None:
    from ktrail.cli import tree as tree_cmd

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something nobody foresaw\nsecond line")
    monkeypatch.setattr(tree_cmd, "build", boom)
    monkeypatch.delenv("KTRAIL_DEBUG", raising=False)
    code, _, err = run_cli(["tree", "4000", "--store", str(good_store)])
    one_error(code, err, EXIT_ERROR, "internal error: RuntimeError: something nobody foresaw",
              "KTRAIL_DEBUG=1")
    monkeypatch.setenv("KTRAIL_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main_mod.main(["tree", "4000", "--store", str(good_store)])


# ---- replay: wrong shapes, bad lines, --strict ---------------------------------------

GOOD = (FIXTURES / "events.jsonl").read_bytes().splitlines(keepends=True)


def _trail(tmp_path: Path, *lines: bytes) -> Path:
    p = tmp_path / "trail.jsonl"
    p.write_bytes(b"".join(lines))
    return p


@pytest.mark.parametrize("line", [
    b"[]\n", b'{"evt": 5}\n', b'{"proc": null}\n', b"5\n", b'"text"\n', b"null\n",
    b'{"evt": {"type": "exec"}, "proc": null}\n',
    b'{"evt": {"type": 7}, "proc": {}}\n',
    b'{"evt": {"type": "exec", "time": "yesterday"}, "proc": {}}\n',
    b'{"evt": {"type": "exec", "time": "2026-13-45T00:00:00Z"}, "proc": {}}\n',
    b'{"evt": {"type": "exec"}, "proc": {"args": "sh -c x"}}\n',
    b'{"evt": {"type": "exec"}, "proc": {"parent": 5}}\n',
    b'{"evt": {"type": "exec"}, "proc": {"ancestors": [1, 2]}}\n',
    b'{"evt": {"type": "exec"}, "proc": {"ancestors": [{"exe": 5}]}}\n',
    b'{"evt": {"type": "open"}, "proc": {}, "file": "/etc/shadow"}\n',
    b'{"evt": {"type": "open"}, "proc": {}, "file": {"path": ["/etc/shadow"]}}\n',
    b"\xff\xfe not json\n",
])
def test_replay_of_wrong_shapes_reports_and_goes_on(line: bytes, tmp_path: Path,
                                                    run_cli: RunCli) -> None:
    trail = _trail(tmp_path, *GOOD[:3], line, *GOOD[3:6])
    code, _, err = run_cli(["replay", str(trail)])
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"ktrail: warning: {trail}:4: ") and "skipped" in lines[0]
    assert lines[1] == "ktrail: 6 events replayed, 0 alerts, 1 bad lines skipped"


@pytest.mark.parametrize("line", [b"[]\n", b'{"evt": {"type": "exec"}, "proc": null}\n'])
def test_replay_strict_stops_at_the_first_bad_line(line: bytes, tmp_path: Path,
                                                   run_cli: RunCli) -> None:
    trail = _trail(tmp_path, *GOOD[:3], line, *GOOD[3:6])
    code, _, err = run_cli(["replay", "--strict", str(trail)])
    one_error(code, err, EXIT_ERROR, f"{trail}:4: ", "--strict")


def test_replay_goes_past_a_cut_off_last_line(tmp_path: Path, run_cli: RunCli) -> None:
    trail = _trail(tmp_path, *GOOD[:10], GOOD[10][:50])
    code, _, err = run_cli(["replay", str(trail)])
    assert code == 0, err
    assert f"{trail}:11: not JSON" in err and "(the last line is cut off)" in err
    assert err.splitlines()[-1].startswith("ktrail: 10 events replayed, ")
    assert err.endswith(" alerts, 1 bad lines skipped\n")


def test_replay_of_garbage_shows_ten_lines_then_a_count(tmp_path: Path,
                                                        run_cli: RunCli) -> None:
    trail = _trail(tmp_path, *GOOD[:2], *[b"garbage %d\n" % i for i in range(5000)],
                   *GOOD[2:4])
    code, _, err = run_cli(["replay", str(trail)])
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 12, err
    assert all(f"{trail}:{n}: not JSON" in lines[n - 3] for n in range(3, 13))
    assert lines[10] == f"ktrail: warning: {trail}: 4990 more bad lines not shown"
    assert lines[11] == "ktrail: 4 events replayed, 0 alerts, 5000 bad lines skipped"


def test_replay_still_finds_alerts_past_bad_lines(tmp_path: Path, run_cli: RunCli) -> None:
    # The same alerts with and without garbage between the events.
    clean = _trail(tmp_path, *GOOD)
    code, want, _ = run_cli(["replay", str(clean)])
    assert code == 0
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_bytes(b"".join(line + b"{]\n" for line in GOOD))
    code, got, err = run_cli(["replay", str(noisy)])
    assert code == 0, err
    assert [orjson.loads(a)["alert"]["rule"] for a in got.splitlines()] == \
        [orjson.loads(a)["alert"]["rule"] for a in want.splitlines()]


def test_rules_profile_skips_bad_lines_too(tmp_path: Path, run_cli: RunCli) -> None:
    trail = _trail(tmp_path, *GOOD[:3], b'{"proc": null}\n')
    code, out, err = run_cli(["rules", "profile", str(trail)])
    assert code == 0, err
    assert f"{trail}:4: " in err and out.startswith("3 events in ")


def test_rules_test_on_a_directory_names_it(tmp_path: Path, run_cli: RunCli) -> None:
    code, _, err = run_cli(["rules", "test", str(tmp_path)])
    one_error(code, err, EXIT_ENV, str(tmp_path), "Is a directory")


def test_replay_skips_a_line_too_long_to_hold(tmp_path: Path, run_cli: RunCli,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ktrail.rules import trail as trail_mod
    monkeypatch.setattr(trail_mod, "MAX_LINE", 4096)  # the real bound is 16 MiB
    trail = _trail(tmp_path, GOOD[0], b"[" * 100_000 + b"\n", GOOD[1], b"x" * 9000)
    code, _, err = run_cli(["replay", str(trail)])
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == f"ktrail: warning: {trail}:2: longer than 4,096 bytes; not an event; skipped"
    assert lines[1].startswith(f"ktrail: warning: {trail}:4: longer than")
    assert lines[2] == "ktrail: 2 events replayed, 0 alerts, 2 bad lines skipped"
