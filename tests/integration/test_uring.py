"""io_uring submissions are seen, though they make no syscall of their own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PROGRAM = r"""
#include <liburing.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	struct sockaddr_in sa = {0};
	int s = socket(AF_INET, SOCK_STREAM, 0);

	if (io_uring_queue_init(8, &ring, 0))
		return 2;
	io_uring_prep_openat(io_uring_get_sqe(&ring), AT_FDCWD, argv[1], O_RDONLY, 0);
	sa.sin_family = AF_INET;
	sa.sin_port = htons(atoi(argv[2]));
	sa.sin_addr.s_addr = htonl(0x7f000001);
	io_uring_prep_connect(io_uring_get_sqe(&ring), s, (struct sockaddr *)&sa, sizeof(sa));
	io_uring_submit(&ring);
	for (int i = 0; i < 2; i++) {
		io_uring_wait_cqe(&ring, &cqe);
		io_uring_cqe_seen(&ring, cqe);
	}
	return 0;
}
"""


@pytest.fixture(scope="module")
def uring_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("uring")
    (d / "u.c").write_text(PROGRAM)
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (scripts/setup.sh installs gcc and liburing-dev)"
    subprocess.run([cc, "-O2", "-o", str(d / "u"), str(d / "u.c"), "-luring"], check=True)
    return d / "u"


def test_uring_open_and_connect(sensor, uring_prog: Path, tmp_path: Path) -> None:
    (tmp_path / "target").write_text("x")
    s = sensor()
    p = subprocess.Popen([str(uring_prog), "target", "9"], cwd=tmp_path)
    assert p.wait() == 0
    t = s.stop()
    ev = {e["io_uring"]["opcode"]: e for e in t.by_pid(p.pid) if "io_uring" in e}
    # A read of an unwatched file: no open event by syscall either, so it
    # stays an io_uring event.
    read = ev["IORING_OP_OPENAT"]
    assert read["evt"]["type"] == "io_uring"
    assert read["io_uring"]["path"] == f"{tmp_path}/target"
    assert read["io_uring"]["flags"] == ["O_RDONLY"]
    # The connect is a connect, with what io_uring adds beside it.
    conn = ev["IORING_OP_CONNECT"]
    assert conn["evt"]["type"] == "connect"
    assert (conn["net"]["daddr"], conn["net"]["dport"]) == ("127.0.0.1", 9)
    for e in (read, conn):
        assert e["evt"]["syscall"] == "io_uring_enter" and e["io_uring"]["sqpoll"] is False
        assert e["evt"]["retval"] is None and e["evt"]["error"] is None
    # No openat/connect syscall was made for these: only io_uring saw them.
    assert [e["evt"]["syscall"] for e in t.by_pid(p.pid, "connect")] == ["io_uring_enter"]


# Opens a file, renames one, makes a symlink, or connects to 127.0.0.1, through
# io_uring only; with "sqpoll" (opens) the ring's kernel thread submits, so the
# process makes no syscall for it.
ATTACK = r"""
#include <liburing.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	struct sockaddr_in sa = {0};
	int sqpoll = argc > 3 && !strcmp(argv[3], "sqpoll");
	char buf[64];
	int s = -1, res;

	if (io_uring_queue_init(8, &ring, sqpoll ? IORING_SETUP_SQPOLL : 0))
		return 2;
	sqe = io_uring_get_sqe(&ring);
	if (!strcmp(argv[1], "open")) {
		io_uring_prep_openat(sqe, AT_FDCWD, argv[2], O_RDONLY, 0);
	} else if (!strcmp(argv[1], "rename")) {
		io_uring_prep_renameat(sqe, AT_FDCWD, argv[2], AT_FDCWD, argv[3], 0);
	} else if (!strcmp(argv[1], "symlink")) {
		io_uring_prep_symlinkat(sqe, argv[2], AT_FDCWD, argv[3]);
	} else {
		s = socket(AF_INET, SOCK_STREAM, 0);
		sa.sin_family = AF_INET;
		sa.sin_port = htons(atoi(argv[2]));
		sa.sin_addr.s_addr = htonl(0x7f000001);
		io_uring_prep_connect(sqe, s, (struct sockaddr *)&sa, sizeof(sa));
	}
	io_uring_submit(&ring);
	if (io_uring_wait_cqe(&ring, &cqe))
		return 3;
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	if (!strcmp(argv[1], "open") && res >= 0 && read(res, buf, sizeof(buf)) <= 0)
		return 4;
	return res >= 0 ? 0 : 1;
}
"""
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


@pytest.fixture(scope="module")
def attack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The program twice: `ushadow` (no reader of /etc/shadow by trade) and,
    for the unprivileged connect, named `bash`."""
    d = tmp_path_factory.mktemp("uring-attack")
    d.chmod(0o755)
    (d / "a.c").write_text(ATTACK)
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (scripts/setup.sh installs gcc and liburing-dev)"
    subprocess.run([cc, "-O2", "-o", str(d / "ushadow"), str(d / "a.c"), "-luring"], check=True)
    shutil.copy(d / "ushadow", d / "bash")
    return d


def _alerts(t, pid: int, rule: str) -> list[dict]:
    return [a for a in t.of_type("alert") if a["alert"]["rule"] == rule
            and a["proc"]["pid"] == pid]


@pytest.mark.parametrize("mode", ["enter", "sqpoll"])
def test_shadow_read_through_io_uring_raises_the_open_alert(
        sensor, attack_dir: Path, mode: str) -> None:
    s = sensor()
    p = subprocess.Popen([str(attack_dir / "ushadow"), "open", "/etc/shadow", mode])
    assert p.wait(timeout=60) == 0  # root really read it, through io_uring alone
    t = s.stop()
    pid = p.pid
    [ev] = [e for e in t.by_pid(pid, "open") if e["file"]["path"] == "/etc/shadow"]
    assert ev["io_uring"]["opcode"] == "IORING_OP_OPENAT"
    assert ev["file"]["watched"] is True and ev["file"]["flags"] == ["O_RDONLY"]
    assert ev["evt"]["retval"] is None
    # With SQPOLL the ring's kernel thread (a thread of this process)
    # submitted it: no syscall at all.
    assert ev["io_uring"]["sqpoll"] is (mode == "sqpoll")
    assert ev["evt"]["syscall"] == (None if mode == "sqpoll" else "io_uring_enter")
    [a] = _alerts(t, pid, "Sensitive file read by an unexpected program")
    assert "ushadow read /etc/shadow" in a["alert"]["output"]
    assert "T1003.008" in a["alert"]["mitre"]
    assert os.getpid() in [x["pid"] for x in a["proc"]["ancestors"]]


def test_unprivileged_connect_through_io_uring_is_a_reverse_shell(
        sensor, attack_dir: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    s = sensor()
    p = subprocess.run([*NOBODY, str(attack_dir / "bash"), "connect", str(port)], timeout=60)
    t = s.stop()
    srv.close()
    assert p.returncode == 0
    [a] = [a for a in t.started_by(os.getpid(), "alert") if a["alert"]["rule"] == "Reverse shell"
           and f"127.0.0.1:{port}" in a["alert"]["output"]]
    [ev] = a["alert"]["events"]
    assert ev["evt"]["type"] == "connect" and ev["evt"]["syscall"] == "io_uring_enter"
    assert ev["io_uring"]["opcode"] == "IORING_OP_CONNECT" and ev["user"]["uid"] == 65534


def test_rename_and_symlink_through_io_uring_are_file_events(
        sensor, attack_dir: Path) -> None:
    # Where nobody can write: pytest's own directories are root's alone.
    d = Path(tempfile.mkdtemp(prefix="ktrail-uring-"))
    try:
        d.chmod(0o777)
        (d / "old").write_text("x")
        s = sensor()
        ren = subprocess.Popen([str(attack_dir / "ushadow"), "rename", "old", "new"], cwd=d)
        assert ren.wait(timeout=60) == 0
        # An unprivileged user sends its history to /dev/null.
        sym = subprocess.Popen([*NOBODY, str(attack_dir / "ushadow"), "symlink", "/dev/null",
                                str(d / ".bash_history")])
        assert sym.wait(timeout=60) == 0
        t = s.stop()
    finally:
        shutil.rmtree(d)
    [mv] = t.by_pid(ren.pid, "rename")
    assert (mv["file"]["path"], mv["file"]["new_path"]) == (f"{d}/old", f"{d}/new")
    assert mv["io_uring"]["opcode"] == "IORING_OP_RENAMEAT"
    [ln] = [e for e in t.started_by(os.getpid(), "symlink") if "io_uring" in e]
    assert ln["file"] == {"target": "/dev/null", "path": f"{d}/.bash_history"}
    assert ln["user"]["uid"] == 65534
    [a] = [a for a in t.started_by(os.getpid(), "alert")
           if a["alert"]["rule"] == "Shell history tampered with"]
    assert f"{d}/.bash_history" in a["alert"]["output"]
