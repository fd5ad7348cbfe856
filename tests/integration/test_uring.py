"""io_uring submissions are seen, though they make no syscall of their own."""

from __future__ import annotations

import shutil
import subprocess
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
    ev = {e["io_uring"]["opcode"]: e for e in t.of_type("io_uring") if e["proc"]["pid"] == p.pid}
    opened = ev["IORING_OP_OPENAT"]["io_uring"]
    assert opened["path"] == f"{tmp_path}/target" and opened["flags"] == ["O_RDONLY"]
    conn = ev["IORING_OP_CONNECT"]
    assert (conn["net"]["daddr"], conn["net"]["dport"]) == ("127.0.0.1", 9)
    # No openat/connect syscall was made for these: only io_uring saw them.
    assert not [e for e in t.of_type("connect") if e["proc"]["pid"] == p.pid]
