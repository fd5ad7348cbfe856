"""Issue 12, finding 4: audit files stay private. --output files (rotated ones
too) and the store are created 0600 and their missing directories 0700,
whatever the umask; a link or a file another user planted (here a real
unprivileged user, in a sticky world-writable directory) is refused with one
line, and what it points to is left untouched."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sensorkit import KTRAIL

NOBODY = 65534


def as_nobody(*cmd: str) -> None:
    subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY),
                    "--clear-groups", *cmd], check=True)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def sticky() -> Iterator[Path]:
    """A directory like /tmp: world-writable and sticky."""
    d = Path(tempfile.mkdtemp(prefix="ktrail-test-sticky-", dir="/tmp"))
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*KTRAIL, "run", "--duration", "2", *args], capture_output=True,
                       text=True, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_files_and_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "trail.jsonl"
    db = tmp_path / "a" / "b" / "trail.db"
    p = subprocess.Popen(
        [*KTRAIL, "run", "--format", "json", "--output", str(out), "--rotate-size", "16K",
         "--rotate-keep", "2", "--store", str(db), "--stats-interval", "0"],
        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=lambda: os.umask(0))
    try:
        assert p.stderr is not None
        while "ready in" not in (line := p.stderr.readline().decode()):
            assert line, "ktrail did not start"
        subprocess.run(["sh", "-c", "for i in $(seq 100); do /bin/true; done"], check=True)
        deadline = time.monotonic() + 30
        while not (Path(f"{db}-wal").exists() and Path(f"{out}.1").exists()):
            assert time.monotonic() < deadline, "no WAL or no rotation"
            time.sleep(0.2)
        # While it runs: SQLite gives its -wal and -shm the database's mode.
        assert {f.name: mode(f) for f in db.parent.iterdir()} == {
            "trail.db": 0o600, "trail.db-wal": 0o600, "trail.db-shm": 0o600}
        assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    finally:
        p.terminate()
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    outputs = sorted(f.name for f in tmp_path.iterdir() if f.name != "a")
    assert outputs[:2] == ["trail.jsonl", "trail.jsonl.1"]
    assert {n: mode(tmp_path / n) for n in outputs} == dict.fromkeys(outputs, 0o600)


def test_output_symlink_planted_by_another_user_is_refused(sticky: Path,
                                                           tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    before = victim.stat()
    link = sticky / "trail.jsonl"
    as_nobody("ln", "-s", str(victim), str(link))
    p = run("--no-store", "--output", str(link))
    assert p.returncode == 2
    assert p.stderr == (f"ktrail: error: --output {link}: is a symbolic link owned by uid "
                        f"{NOBODY} (not root, not us); refusing to follow it\n")
    assert victim.read_text() == "precious\n"
    assert victim.stat().st_mtime_ns == before.st_mtime_ns


def test_output_file_of_another_user_is_refused(sticky: Path) -> None:
    planted = sticky / "trail.jsonl"
    as_nobody("sh", "-c", f"echo theirs > {planted}")
    p = run("--no-store", "--output", str(planted))
    assert p.returncode == 2
    assert p.stderr == (f"ktrail: error: --output {planted}: owned by uid {NOBODY} (not "
                        "root, not us); refusing to write to it: remove it or choose another "
                        "path\n")
    assert planted.read_text() == "theirs\n"


def test_store_symlink_planted_by_another_user_is_refused(sticky: Path,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "made-through-the-link.db"
    link = sticky / "trail.db"
    as_nobody("ln", "-s", str(target), str(link))
    p = run("--store", str(link), "--output", str(tmp_path / "out.jsonl"))
    assert p.returncode == 2
    assert p.stderr == (f"ktrail: error: store {link}: is a symbolic link owned by uid "
                        f"{NOBODY} (not root, not us); refusing to follow it\n")
    assert not target.exists()


def test_store_wal_planted_by_another_user_is_refused(sticky: Path, tmp_path: Path) -> None:
    db = sticky / "trail.db"
    as_nobody("touch", f"{db}-wal")
    p = run("--store", str(db), "--output", str(tmp_path / "out.jsonl"))
    assert p.returncode == 2
    assert p.stderr == (f"ktrail: error: store {db}: trail.db-wal is a file owned by uid "
                        f"{NOBODY} (not root, not us); refusing to use it: remove it\n")
    assert not db.exists()
