"""File events against the real kernel: absolute paths, results, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Every operation, run by one child process in `tmp` (its cwd), mixing
# relative paths, absolute paths, dirfd-relative calls and fds.
SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.chdir(sys.argv[1])
    fd = os.open("created", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.close(fd)
    d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open("in-sub", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=d)
    os.ftruncate(fd, 0)
    os.fchmod(fd, 0o755)
    os.close(fd)
    os.rename("created", "renamed")
    os.link("renamed", "hardlink")
    os.symlink("../target/as-given", "symlink")
    os.chmod("renamed", 0o4755)
    os.chown("renamed", 65534, 65534)
    os.utime("renamed", ns=(978307200_000000000, 978307200_000000000))
    os.truncate("renamed", 0)
    os.unlink("hardlink")
    os.mkdir("gone")
    os.rmdir("gone")
    try:
        os.unlink("/nonexistent-ktrail/x")
    except FileNotFoundError:
        pass
    try:
        os.open("sub", os.O_WRONLY)
    except IsADirectoryError:
        pass
    with open("secret/key", "rb"):
        pass
    """
)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_bytes(b"k")
    return tmp_path


def run_script(work: Path) -> int:
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(work)])
    assert p.wait() == 0
    return p.pid


def test_full_profile_file_events(sensor, work: Path) -> None:
    s = sensor("--profile", "full", "--watch", str(work / "secret"))
    pid = run_script(work)
    t = s.stop()
    assert t.final["reader"]["unreconciled"] == 0
    w = str(work)

    creates = {e["file"]["path"]: e for e in t.by_pid(pid, "create")}
    assert creates[f"{w}/created"]["file"]["created"] is True
    assert creates[f"{w}/created"]["file"]["mode"] == "0640"
    assert "O_EXCL" in creates[f"{w}/created"]["file"]["flags"]
    # dirfd-relative: resolved against the directory fd, not the cwd.
    assert creates[f"{w}/sub/in-sub"]["evt"]["syscall"] == "openat"

    [rename] = t.by_pid(pid, "rename")
    assert rename["file"] == {"path": f"{w}/created", "new_path": f"{w}/renamed", "flags": 0}
    [link] = t.by_pid(pid, "link")
    assert (link["file"]["path"], link["file"]["new_path"]) == (f"{w}/renamed", f"{w}/hardlink")
    [symlink] = t.by_pid(pid, "symlink")
    assert symlink["file"] == {"target": "../target/as-given", "path": f"{w}/symlink"}

    chmods = {(e["file"]["path"], e["file"]["mode"]) for e in t.by_pid(pid, "chmod")}
    assert chmods == {(f"{w}/sub/in-sub", "0755"), (f"{w}/renamed", "4755")}
    [chown] = t.by_pid(pid, "chown")
    assert (chown["file"]["path"], chown["file"]["uid"], chown["file"]["gid"]) == (
        f"{w}/renamed", 65534, 65534)
    [utimes] = t.by_pid(pid, "utimes")
    assert utimes["file"]["mtime"] == utimes["file"]["atime"] == 978307200_000000000
    truncs = {(e["file"]["path"], e["evt"]["syscall"]) for e in t.by_pid(pid, "truncate")}
    assert truncs == {(f"{w}/sub/in-sub", "ftruncate"), (f"{w}/renamed", "truncate")}

    unlinks = {e["file"]["path"]: e["evt"]["error"] for e in t.by_pid(pid, "unlink")}
    assert unlinks == {f"{w}/hardlink": None, "/nonexistent-ktrail/x": "ENOENT"}
    [rmdir] = t.by_pid(pid, "rmdir")
    assert rmdir["file"]["path"] == f"{w}/gone" and rmdir["evt"]["retval"] == 0

    opens = {e["file"]["path"]: e for e in t.by_pid(pid, "open")}
    # A failed attempt to write is an event, with its errno.
    assert opens[f"{w}/sub"]["evt"]["error"] == "EISDIR"
    # A read of a watched directory's file, by inode.
    assert opens[f"{w}/secret/key"]["file"]["watched"] is True
    assert opens[f"{w}/secret/key"]["file"]["flags"][0] == "O_RDONLY"
    for e in t.by_pid(pid):
        if e["evt"]["type"] in ("rename", "unlink", "chmod"):
            assert e["proc"]["exe"] == sys.executable  # as given to execve


def test_default_profile_reports_watched_reads_not_writes(sensor, work: Path) -> None:
    s = sensor("--watch", str(work / "secret"))
    pid = run_script(work)
    t = s.stop()
    opens = [e["file"]["path"] for e in t.by_pid(pid, "open")]
    # Writes are `full` only; the watched read is always reported.
    assert opens == [f"{work}/secret/key"]
    assert not t.by_pid(pid, "unlink") and not t.by_pid(pid, "truncate")
    assert {e["file"]["path"] for e in t.by_pid(pid, "create")} == {
        f"{work}/created", f"{work}/sub/in-sub"}


def test_mv_in_temp_dir_gives_absolute_paths(sensor, work: Path) -> None:
    (work / "a").write_text("x")
    s = sensor()
    p = subprocess.Popen(["mv", "a", "b"], cwd=work)
    assert p.wait() == 0
    t = s.stop()
    [e] = [e for e in t.of_type("rename") if e["proc"]["pid"] == p.pid]
    assert (e["file"]["path"], e["file"]["new_path"]) == (f"{work}/a", f"{work}/b")
    assert e["proc"]["exe"].endswith("/mv") and e["proc"]["args"] == ["mv", "a", "b"]


def test_watched_file_replaced_keeps_being_watched(sensor, tmp_path: Path) -> None:
    secret = tmp_path / "shadow-like"
    secret.write_text("1")
    s = sensor("--watch", str(secret))
    # Rewritten the way passwd rewrites /etc/shadow: new inode, same name.
    new = tmp_path / "shadow-like.new"
    new.write_text("2")
    os.rename(new, secret)
    time.sleep(1.5)  # the watch set is refreshed every second
    p = subprocess.Popen(["cat", str(secret)], stdout=subprocess.DEVNULL)
    p.wait()
    t = s.stop()
    assert [e["file"]["path"] for e in t.of_type("open") if e["proc"]["pid"] == p.pid] == [
        str(secret)]
