"""CLI error handling (in-process, never touching the kernel), filters and the clock.

Every `ktrail run` test runs with the machine-facing calls (preflight, tracefs, the
sensor) replaced: usage errors must be caught before any of them, and the one test that
gets past them uses fakes, so nothing here loads BPF even when run as root.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ktrail.cli import run as run_cmd
from ktrail.cli.errors import EXIT_ENV, CliError
from ktrail.cli.main import main
from ktrail.engine.enrich import Event
from ktrail.loader import features
from ktrail.sinks.output import EventFilter
from ktrail.units import Clock

REAL_PREFLIGHT = features.preflight
GUARD = "test guard: the kernel was about to be touched"
# The run_cli fixture (conftest.py): main(argv) -> (exit code, stdout, stderr).
RunCli = Callable[[list[str]], tuple[int, str, str]]


class Machine:
    """Records whether the CLI got as far as the machine-facing calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def preflight(self) -> list[str]:
        self.calls.append("preflight")
        return [GUARD]

    def ensure_tracefs(self) -> str:
        self.calls.append("ensure_tracefs")
        raise AssertionError(GUARD)

    def sensor(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("sensor")
        raise AssertionError(GUARD)


@pytest.fixture(autouse=True)
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    m = Machine()
    monkeypatch.setattr(features, "preflight", m.preflight)
    monkeypatch.setattr(features, "ensure_tracefs", m.ensure_tracefs)
    monkeypatch.setattr(run_cmd, "build", m.sensor)  # the sensor is built there
    return m


def assert_cli_error(code: int, err: str, *needles: str) -> None:
    assert code == EXIT_ENV == 2
    assert err.startswith("ktrail: error: "), err
    assert err.endswith("\n")
    for n in needles:
        assert n in err, (n, err)


def assert_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert err.startswith("usage: ktrail"), err
    assert "ktrail" in err and "error: " in err
    for n in needles:
        assert n in err, (n, err)


# --- usage errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [("bogus", "bogus"), ("exec,nope", "nope"), ("", "(none given)"), (" , ", "(none given)")],
)
def test_bad_events(
    value: str, needle: str, run_cli: RunCli, machine: Machine
) -> None:
    code, _, err = run_cli(["run", "--events", value])
    assert_cli_error(code, err, "--events", needle, "exec, fork, exit")
    assert machine.calls == []


@pytest.mark.parametrize("value", ["12Q", "", "M", "-1M", "0", "abc", "inf", "1e400"])
def test_bad_ring_size(value: str, run_cli: RunCli, machine: Machine) -> None:
    code, _, err = run_cli(["run", f"--ring-size={value}"])
    assert_cli_error(code, err, "--ring-size", repr(value))
    assert err.count("\n") == 1
    assert machine.calls == []


@pytest.mark.parametrize("value", ["-1", "-0.5", "0", "nan"])
def test_bad_duration(value: str, run_cli: RunCli, machine: Machine) -> None:
    code, _, err = run_cli(["run", f"--duration={value}"])
    assert_cli_error(code, err, "--duration must be a positive number")
    assert machine.calls == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--no-store", "--store", "/tmp/x.db"], "--no-store turns the store off"),
        (["--store-retain", "soon"], "--store-retain: 'soon' is not a duration"),
        (["--store-retain=-1d"], "--store-retain: '-1d' is not a duration"),
        (["--store-max-size", "1M"], "--store-max-size must be at least 4M"),
        (["--store-max-size", "big"], "--store-max-size: 'big' is not a size"),
        (["--max-procs", "0"], "--max-procs must be at least 1"),
        (["--rotate-keep", "-1"], "--rotate-keep must be 0 or more"),
    ],
)
def test_bad_bounds(
    argv: list[str], needle: str, run_cli: RunCli, machine: Machine
) -> None:
    code, _, err = run_cli(["run", *argv])
    assert_cli_error(code, err, needle)
    assert machine.calls == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--pid", "abc"], "--pid"),
        (["run", "--format", "xml"], "--format"),
        (["run", "--reader", "magic"], "--reader"),
        (["run", "--duration", "soon"], "--duration"),
    ],
)
def test_argparse_errors(
    argv: list[str], needle: str, run_cli: RunCli, machine: Machine
) -> None:
    code, _, err = run_cli(argv)
    assert_usage_error(code, err, needle)
    assert machine.calls == []


def test_no_subcommand(run_cli: RunCli, machine: Machine) -> None:
    code, _, err = run_cli([])
    assert code == 2
    assert err.startswith("usage: ktrail")
    assert "run" in err and "doctor" in err
    assert machine.calls == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(r"ktrail \d+\.\d+\.\d+\n", capsys.readouterr().out)


# --- errors past the usage checks -----------------------------------------------------


def test_not_privileged(
    monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, machine: Machine
) -> None:
    # The real preflight, seeing an unprivileged caller: it stops before probing anything.
    monkeypatch.setattr(features, "preflight", REAL_PREFLIGHT)
    monkeypatch.setattr(features.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(features, "effective_caps", lambda: 0)
    code, _, err = run_cli(["run", "--duration", "1"])
    assert_cli_error(code, err, "cannot trace on this machine", "root")
    assert machine.calls == []


class FakeBuild:
    """Stands for engine.builder.build: records that the sensor would start."""

    started = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        FakeBuild.started = True
        raise AssertionError("the sensor was built")


@pytest.mark.parametrize("privileged", [False, True])
def test_output_in_missing_directory(
    privileged: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: RunCli,
) -> None:
    """Unprivileged, the preflight refuses first; privileged, the --output check does.

    Both paths run whatever os.geteuid() is here (the privilege is faked either way), and
    the privileged one uses a fake sensor, so no BPF is ever loaded.
    """
    target = tmp_path / "missing" / "trail.json"
    if privileged:
        monkeypatch.setattr(features, "preflight", lambda: [])
        monkeypatch.setattr(features, "ensure_tracefs", lambda: "/sys/kernel/tracing")
        monkeypatch.setattr(run_cmd, "build", FakeBuild())
        FakeBuild.started = False
    else:
        monkeypatch.setattr(features, "preflight", REAL_PREFLIGHT)
        monkeypatch.setattr(features.os, "geteuid", lambda: 1000)
        monkeypatch.setattr(features, "effective_caps", lambda: 0)
    code, _, err = run_cli(["run", "--output", str(target)])
    if privileged:
        assert_cli_error(code, err, f"--output {target}", "No such file or directory")
        assert not FakeBuild.started  # a bad --output is refused before BPF is loaded
    else:
        assert_cli_error(code, err, "root")
    assert not target.parent.exists()


def test_output_in_missing_directory_as_this_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    """As whoever runs the tests: non-root fails in the real preflight; root gets past it
    (faked, so no kernel probing) to the --output check."""
    target = tmp_path / "missing" / "trail.json"
    if os.geteuid() == 0:
        monkeypatch.setattr(features, "preflight", lambda: [])
        monkeypatch.setattr(features, "ensure_tracefs", lambda: "/sys/kernel/tracing")
        monkeypatch.setattr(run_cmd, "build", FakeBuild())
    else:
        monkeypatch.setattr(features, "preflight", REAL_PREFLIGHT)
        monkeypatch.setattr(features, "effective_caps", lambda: 0)
    code, _, err = run_cli(["run", "--output", str(target)])
    if os.geteuid() == 0:
        assert_cli_error(code, err, f"--output {target}", "No such file or directory")
    else:
        assert_cli_error(code, err, "root")


def test_cli_error_code() -> None:
    assert CliError("x").code == EXIT_ENV
    assert CliError("x", code=1).code == 1


# --- EventFilter ---------------------------------------------------------------------


def ev(pid: int, comm: str, uid: int) -> Event:
    return {"evt": {"type": "exec"}, "proc": {"pid": pid, "comm": comm, "uid": uid}}


EVENTS = [ev(1, "init", 0), ev(100, "sh", 1000), ev(101, "echo", 1000), ev(200, "sh", 0)]


def pids(events: list[Event]) -> list[int]:
    return [e["proc"]["pid"] for e in events]


def test_filter_inactive_passes_everything() -> None:
    f = EventFilter()
    assert not f.active
    assert f.apply(EVENTS) is EVENTS
    assert all(f.match(e) for e in EVENTS)


def test_filter_by_pid() -> None:
    f = EventFilter(pids=frozenset({100, 200, 999}))
    assert f.active
    assert pids(f.apply(EVENTS)) == [100, 200]


def test_filter_by_comm() -> None:
    assert pids(EventFilter(comms=frozenset({"sh"})).apply(EVENTS)) == [100, 200]
    assert pids(EventFilter(comms=frozenset({"SH"})).apply(EVENTS)) == []


def test_filter_by_uid() -> None:
    assert pids(EventFilter(uids=frozenset({0})).apply(EVENTS)) == [1, 200]
    assert pids(EventFilter(uids=frozenset({1000})).apply(EVENTS)) == [100, 101]


def test_filter_criteria_combine_with_and() -> None:
    f = EventFilter(comms=frozenset({"sh", "echo"}), uids=frozenset({1000}))
    assert pids(f.apply(EVENTS)) == [100, 101]
    f = EventFilter(pids=frozenset({100, 200}), comms=frozenset({"sh"}), uids=frozenset({0}))
    assert pids(f.apply(EVENTS)) == [200]


# --- Clock ---------------------------------------------------------------------------


def fixed_clock(offset_ns: int = 0) -> Clock:
    c = Clock()
    c.offset_ns = offset_ns
    return c


def test_rfc3339_epoch() -> None:
    c = fixed_clock()
    assert str(c.time(0)) == "1970-01-01T00:00:00.000000000Z"
    assert str(c.time(1)) == "1970-01-01T00:00:00.000000001Z"
    assert str(c.time(999_999_999)) == "1970-01-01T00:00:00.999999999Z"
    assert str(c.time(1_000_000_000)) == "1970-01-01T00:00:01.000000000Z"


def test_rfc3339_with_offset() -> None:
    # 2024-02-29T23:59:59 UTC, a leap day, as the wall time at boot.
    c = fixed_clock(1_709_251_199 * 1_000_000_000)
    assert str(c.time(123_456_789)) == "2024-02-29T23:59:59.123456789Z"
    assert str(c.time(1_000_000_000)) == "2024-03-01T00:00:00.000000000Z"
    assert c.wall_ns(5) == 1_709_251_199 * 1_000_000_000 + 5


def test_rfc3339_cache_follows_seconds() -> None:
    c = fixed_clock()
    seq = [5_000_000_001, 5_999_999_999, 6_000_000_000, 5_000_000_002, 86_400 * 10**9 + 7]
    got = [str(c.time(n)) for n in seq]
    assert got == [
        "1970-01-01T00:00:05.000000001Z",
        "1970-01-01T00:00:05.999999999Z",
        "1970-01-01T00:00:06.000000000Z",
        "1970-01-01T00:00:05.000000002Z",
        "1970-01-02T00:00:00.000000007Z",
    ]


def test_rfc3339_now_is_close_to_wall_clock() -> None:
    c = Clock()
    stamp = str(c.time(c.now_boot_ns()))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z", stamp)
    wall = time.strftime("%Y-%m-%dT%H:%M", time.gmtime())
    before = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 60))
    assert stamp[:16] in (wall, before)
