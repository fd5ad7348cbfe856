"""The audit trail store with the real sensor: on by default, queried from
another process while the sensor writes, trees of real shells, kill -9 and
restart, a full disk, and a file that is not a store."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sensorkit import jsonl, ktrail, machine_lock, probe, until

from ktrail.store import DEFAULT_PATH


def query_json(*argv: str) -> list[dict[str, Any]]:
    return jsonl(ktrail("query", "--format", "json", *argv).stdout)


@pytest.fixture
def default_store() -> Iterator[None]:
    """The default store is the machine's: one sensor at a time may write it, so
    runs of this suite take turns (requested before `sensor`, released after it)."""
    with machine_lock("default-store"):
        yield


def test_store_is_on_by_default_and_answers_while_the_sensor_runs(default_store: None, sensor,
                                                                  tmp_path: Path) -> None:
    # The real default path, as an operator gets it (no --store anywhere).
    s = sensor(store=None)
    exe = probe(tmp_path)
    subprocess.run([exe, "--flag"], check=True)

    found = until(lambda: query_json("--type", "exec", "--since", "10m", "--exe", exe))
    assert s.proc.poll() is None  # still running: read from another process meanwhile
    assert len(found) == 1, found
    assert found[0]["proc"]["args"] == [exe, "--flag"]
    assert found[0]["exec"]["filename"] == exe
    count = ktrail("query", "select count(*) AS n from events").stdout
    assert orjson.loads(count)["n"] >= 1
    t = s.stop()
    assert t.returncode == 0, t.stderr
    assert f"storing the trail in {DEFAULT_PATH}" in t.stderr
    store = t.final["store"]
    assert store["path"] == DEFAULT_PATH and store["written"] >= 3
    # Nothing failed; batches shed (a full queue) would depend on the machine's load.
    assert store["failed"] == store["errors"] == 0
    # What the stream said is what the store has.
    [streamed] = t.execs(exe)
    assert streamed == found[0]


def test_tree_of_a_shell_session(sensor, tmp_path: Path) -> None:
    s = sensor()
    exe = probe(tmp_path)
    script = f"echo $$; {exe} one; touch {tmp_path}/made; mv {tmp_path}/made {tmp_path}/moved"
    out = subprocess.run(["bash", "-c", script + "; true"], capture_output=True, text=True,
                         check=True)
    shell_pid = out.stdout.split()[0]

    def tree() -> dict[str, Any] | None:
        p = ktrail("tree", shell_pid, "--store", s.store, "--format", "json", check=False)
        if p.returncode != 0:
            return None
        t = orjson.loads(p.stdout)
        return t if len(t["tree"]["children"]) >= 3 else None

    t = until(tree)
    assert t is not None, "the shell's tree never showed its three children"
    root = t["tree"]
    assert root["pid"] == int(shell_pid) and root["exe"] == "/usr/bin/bash"
    assert root["args"] == ["bash", "-c", script + "; true"]
    kids = {c["exe"]: c for c in root["children"]}
    assert set(kids) >= {exe, "/usr/bin/touch", "/usr/bin/mv"}
    assert kids[exe]["args"] == [exe, "one"] and kids[exe]["exit_code"] == 0
    assert f"create {tmp_path}/made" in [e["summary"] for e in kids["/usr/bin/touch"]["events"]]
    assert f"rename {tmp_path}/made -> {tmp_path}/moved" in [
        e["summary"] for e in kids["/usr/bin/mv"]["events"]]
    # Its ancestry reaches the test process that started it.
    assert os.getpid() in [a["pid"] for a in t["ancestors"]]
    text = ktrail("tree", root["exec_id"], "--store", s.store).stdout
    assert f"bash({shell_pid})" in text and "mv(" in text and "target" in text
    s.stop()


def _rows(db: str) -> tuple[list[tuple], list[tuple]]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        events = c.execute("SELECT id, json FROM events ORDER BY id").fetchall()
        procs = c.execute("SELECT boot, exec_id FROM processes").fetchall()
    finally:
        c.close()
    return events, procs


def test_kill_9_loses_nothing_committed_and_restart_resumes(sensor, tmp_path: Path) -> None:
    db = str(tmp_path / "trail.db")
    first = sensor(store=db)
    exe1 = probe(tmp_path)
    subprocess.run([exe1], check=True)
    assert until(lambda: query_json("--store", db, "--exe", exe1, "--type", "exec"))
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    before_events, before_procs = _rows(db)
    assert before_events and before_procs

    second = sensor(store=db)
    exe2 = probe(tmp_path)
    subprocess.run([exe2], check=True)
    assert until(lambda: query_json("--store", db, "--exe", exe2, "--type", "exec"))
    t = second.stop()
    assert t.returncode == 0, t.stderr
    assert "warning: store" not in t.stderr
    after_events, after_procs = _rows(db)
    # Everything committed before the kill is still there, unchanged, once.
    assert after_events[:len(before_events)] == before_events
    ids = [i for i, _ in after_events]
    assert len(ids) == len(set(ids))
    assert len(query_json("--store", db, "--exe", exe1, "--type", "exec")) == 1
    assert len(query_json("--store", db, "--exe", exe2, "--type", "exec")) == 1
    # /proc was seeded twice: processes alive through both runs have one row.
    assert len(after_procs) == len(set(after_procs))
    assert set(before_procs) <= set(after_procs)
    both = {e for b, e in before_procs} & {e for b, e in after_procs}
    init_start = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert f"1:{init_start}" in both


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_reported_and_the_stream_goes_on(sensor, tiny_fs: Path,
                                                      tmp_path: Path) -> None:
    s = sensor(store=str(tiny_fs / "trail.db"))
    # Enough exec/fork/exit events to fill a 1 MiB filesystem several times over.
    loop = subprocess.Popen(["sh", "-c", "for i in $(seq 1500); do /bin/true; done"])
    assert loop.wait() == 0
    exe = probe(tmp_path)
    time.sleep(1)
    subprocess.run([exe], check=True)  # after the disk is full
    t = s.stop()
    assert t.returncode == 0, t.stderr
    warnings = [line for line in t.stderr.splitlines() if "disk full" in line]
    # Once per episode: retention can free pages and writing resumes (and
    # says so); the disk may fill again if other activity adds events.
    episodes = [("full" if "disk full" in line else "again") for line in t.stderr.splitlines()
                if "disk full" in line or "writing again" in line]
    assert episodes[:1] == ["full"], t.stderr
    assert all(a != b for a, b in itertools.pairwise(episodes)), t.stderr
    assert "stats.store.failed" in warnings[0] and "stream goes on" in warnings[0]
    st = t.final["store"]
    assert st["failed"] > 0 and st["errors"] > 0 and st["last_error"] == "disk full"
    assert st["written"] + st["failed"] + st["shed"] == t.final["events_total"]
    # The stream has everything, the late probe included.
    mine = [e for e in t.execs("/bin/true") if e["proc"]["ppid"] == loop.pid]
    assert len(mine) == 1500 and len(t.execs(exe)) == 1


def test_no_room_for_the_store_at_start_is_a_warning_not_a_stop(sensor, tiny_fs: Path,
                                                                tmp_path: Path) -> None:
    filler = tiny_fs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
    s = sensor(store=str(tiny_fs / "trail.db"))
    exe = probe(tmp_path)
    subprocess.run([exe], check=True)
    t = s.stop()
    assert t.returncode == 0, t.stderr
    assert f"warning: store {tiny_fs}/trail.db" in t.stderr and "disk full" in t.stderr
    assert "the trail is not stored in this run" in t.stderr
    assert t.final["store"] is None and len(t.execs(exe)) == 1


def test_a_file_that_is_not_a_store_stops_the_sensor_before_it_starts(tmp_path: Path) -> None:
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"my notes, not a database\n" * 10)
    digest = hashlib.sha256(junk.read_bytes()).hexdigest()
    t0 = time.monotonic()
    p = ktrail("run", "--store", str(junk), "--duration", "1", check=False)
    assert p.returncode == 2
    assert p.stderr.startswith(f"ktrail: error: store {junk}: not a ktrail store")
    assert p.stderr.count("\n") == 1 and "ready in" not in p.stderr
    assert hashlib.sha256(junk.read_bytes()).hexdigest() == digest
    assert time.monotonic() - t0 < 10
