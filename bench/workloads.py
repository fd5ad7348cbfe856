"""The workloads: small C programs (no interpreter start-up in the timing) and
one realistic job, each sized to run about a second with no tracing."""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "workloads"
WORK = Path("/tmp/ktrail-bench")  # ext4 here, as a real workload's files would be


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    argv: tuple[str, ...]
    iterations: int  # the count passed to the program (scaled)
    note: str

    def command(self, n: int | None = None) -> list[str]:
        """The command line; argv[1] is the iteration count, which `n` replaces."""
        argv = list(self.argv)
        if n is not None:
            argv[1] = str(n)
        return [str(BIN / argv[0]), *argv[1:]]


def workloads(scale: float) -> list[Workload]:
    def n(x: int) -> int:
        return max(1, int(x * scale))

    return [
        Workload("getppid", f"getppid x{n(5_000_000):,}", ("getppid", str(n(5_000_000))),
                 n(5_000_000), "a syscall no event type watches"),
        Workload("open_close", f"open+close read-only x{n(1_000_000):,}",
                 ("open_close", str(n(1_000_000)), str(WORK / "readme")), n(1_000_000),
                 "watched syscalls whose events are filtered out in the kernel"),
        Workload("creat_flood", f"O_CREAT flood x{n(50_000):,}",
                 ("creat_flood", str(n(50_000)), str(WORK)), n(50_000),
                 "one create event per iteration (open O_CREAT|O_EXCL, close, unlink)"),
        Workload("fork_exec", f"fork+exec /bin/true x{n(2_000):,}", ("fork_exec", str(n(2_000))),
                 n(2_000), "fork, exec and exit events per iteration"),
        Workload("tcp_connect", f"TCP connect loopback x{n(20_000):,}",
                 ("tcp_connect", str(n(20_000))), n(20_000),
                 "a connect and an accept event per iteration"),
        Workload("mixed", f"untar + make -j2 of a C tree ({n(48)} files)",
                 ("mixed.sh", str(WORK / "tree.tar"), str(WORK / "tree")), n(48),
                 "a realistic job: tar, make, gcc (fork, exec, create, rename)"),
    ]


def prepare(scale: float) -> None:
    """Build the programs and the job's input, outside any timing."""
    subprocess.run(["make", "-s", "-C", str(BIN)], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "readme").write_text("x\n")
    files = max(1, int(48 * scale))
    src = WORK / "src"
    src.mkdir(exist_ok=True)
    for i in range(files):
        body = "\n".join(
            f"int f{i}_{j}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {j} ^ x;"
            f" return s; }}" for j in range(40))
        (src / f"m{i}.c").write_text(f"#include <stdio.h>\n{body}\n")
    (src / "main.c").write_text("int main(void) { return 0; }\n")
    objs = " ".join(f"m{i}.o" for i in range(files))
    (src / "Makefile").write_text(
        f"prog: main.o {objs}\n\t$(CC) -o $@ $^\n%.o: %.c\n\t$(CC) -O1 -c -o $@ $<\n")
    with tarfile.open(WORK / "tree.tar", "w") as t:
        t.add(src, arcname=".")


def count_syscalls(w: Workload) -> int:
    """Syscalls the workload makes (all its processes), so the added time can
    be given per syscall. strace is slow, so loops are counted at two small
    sizes and extrapolated (a fixed start-up plus a fixed count per iteration);
    the job, which has no loop, is counted as it runs."""
    if w.key == "mixed":
        return _strace(w.command())
    small = max(1, min(w.iterations, 200))
    a, b = _strace(w.command(small)), _strace(w.command(2 * small))
    per = (b - a) / small
    return round(a + per * (w.iterations - small))


def _strace(cmd: list[str]) -> int:
    out = subprocess.run(["strace", "-f", "-c", "-o", "/dev/stdout", *cmd],
                         capture_output=True, text=True, check=True).stdout
    # "% time  seconds  usecs/call  calls  errors  total"
    totals = [ln.split() for ln in out.splitlines() if ln.rstrip().endswith("total")]
    if not totals or len(totals[-1]) < 5:
        raise RuntimeError(f"strace -c printed no total for {cmd[0]}:\n{out}")
    return int(totals[-1][3])


def cleanup() -> None:
    subprocess.run(["rm", "-rf", str(WORK)], check=False)
