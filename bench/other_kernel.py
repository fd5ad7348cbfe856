"""Unwatched syscalls where the kernel allows fentry: Debian 12's 6.1 under qemu.

    .venv/bin/python bench/other_kernel.py [--runs 5] [--scale 0.1]   # as root, on the host

The suite (bench/run.py) runs it as its last stage; on its own it writes
bench/results/<date>-linux-<guest kernel>.{json,md}.

This machine's 6.18 refuses fentry, so the default profile's syscall events
go through syscall tracepoints, and one syscall tracepoint puts every task on
the kernel's slow syscall path. On a kernel with fentry (Debian 12's 6.1,
booted with tests/vm/boot.sh) the sensor hooks each watched syscall's own
function instead. This stage shows what that leaves on a syscall nobody
watches, beside the same profile forced onto tracepoints.

Under software emulation the guest's wall clock is noisy (its vCPUs are host
threads sharing two CPUs), so the workload's own CPU time (user + system,
from wait4) is reported beside it; the sensor is pinned to the second vCPU
and the workload to the first. The run is interleaved like the main suite.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BOOT = ROOT / "tests" / "vm" / "boot.sh"
BIN = HERE / "workloads"

BASE = "no tracing"
CONFIGS: dict[str, list[str] | None] = {
    BASE: None,
    "ktrail default": ["--profile", "default"],
    "ktrail default (tracepoints only)": ["--profile", "default", "--syscall-hooks", "tracepoint"],
}
# (key, title, program, iterations at scale 1, syscalls per iteration)
WORKLOADS = (
    ("getppid", "getppid (unwatched)", "getppid", 5_000_000, 1),
    ("open_close", "open+close read-only (watched, filtered in the kernel)", "open_close",
     1_000_000, 2),
)


class VMError(Exception):
    """The VM did not boot or the run inside it failed."""


def _start_sensor(args: list[str]) -> tuple[subprocess.Popen[bytes], float, str]:
    t = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "ktrail", "run", "--no-rules", "--no-store", "--format", "json",
         "--output", "/dev/null", "--stats-interval", "0", *args],
        stderr=subprocess.PIPE)
    assert p.stderr is not None
    os.sched_setaffinity(p.pid, {1})
    while True:
        line = p.stderr.readline().decode()
        if not line:
            raise RuntimeError(f"ktrail did not start ({' '.join(args)}): exit {p.wait()}")
        if "ready in" in line:
            return p, time.monotonic() - t, line.strip()


def _measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the program's own CPU seconds (user + system)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {status}")
    return wall, ru.ru_utime + ru.ru_stime


def inside(runs: int, scale: float) -> dict[str, Any]:
    """Runs in the guest: every (run, configuration, workload), interleaved."""
    target = Path(tempfile.mkdtemp(prefix="ktrail-bench-")) / "readme"
    target.write_text("x\n")  # on the guest's tmpfs: / is a 9p share there
    n = {key: max(1, int(iters * scale)) for key, _, _, iters, _ in WORKLOADS}
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {
        key: {c: [] for c in CONFIGS} for key, *_ in WORKLOADS}
    ready: dict[str, str] = {}
    startup: dict[str, list[float]] = {c: [] for c in CONFIGS if CONFIGS[c] is not None}
    for run in range(runs):
        for cname, cargs in CONFIGS.items():
            sensor = None
            if cargs is not None:
                sensor, took, line = _start_sensor(cargs)
                startup[cname].append(took)
                # "... with N programs (fentry 12, tp_btf 5 hooks) ...": what it chose
                m = re.search(r"with \d+ programs \(([^)]*)\)", line)
                ready[cname] = m.group(1) if m else line
            try:
                for key, _, prog, _, _ in WORKLOADS:
                    cmd = [str(BIN / prog), str(n[key])]
                    if key == "open_close":
                        cmd.append(str(target))
                    samples[key][cname].append(_measure(cmd))
                    wall, cpu = samples[key][cname][-1]
                    print(f"bench(6.1): run {run + 1}/{runs}: {cname}: {key}: "
                          f"{wall:.3f} s, cpu {cpu:.3f} s", file=sys.stderr, flush=True)
            finally:
                if sensor is not None:
                    sensor.terminate()
                    sensor.wait(timeout=120)
    rows = []
    for key, title, _, _, per in WORKLOADS:
        base_wall = statistics.median(w for w, _ in samples[key][BASE])
        base_cpu = statistics.median(c for _, c in samples[key][BASE])
        for cname, xs in samples[key].items():
            walls, cpus = [w for w, _ in xs], [c for _, c in xs]
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            rows.append({
                "workload": key, "title": f"{title} x{n[key]:,}", "config": cname,
                "wall_s": round(wall, 4), "wall_ratio": round(wall / base_wall, 3),
                "wall_spread": [round(min(walls) / base_wall, 3),
                                round(max(walls) / base_wall, 3)],
                "cpu_s": round(cpu, 4), "cpu_ratio": round(cpu / base_cpu, 3),
                "cpu_spread": [round(min(cpus) / base_cpu, 3), round(max(cpus) / base_cpu, 3)],
                "cpu_ns_per_syscall": round((cpu - base_cpu) / (n[key] * per) * 1e9),
            })
    return {"kernel": os.uname().release, "runs": runs, "scale": scale, "rows": rows,
            "ready": ready,
            "startup_s": {c: round(statistics.median(v), 2) for c, v in startup.items()}}


def run(runs: int = 5, scale: float = 0.1, log: Any = print) -> dict[str, Any]:
    """On the host: boot the 6.1 VM and run `inside` there."""
    with tempfile.TemporaryDirectory(prefix="ktrail-bench-vm-") as share:
        out = Path(share) / "result.json"
        t = time.monotonic()
        p = subprocess.run(
            [str(BOOT), "--share", share, "--timeout", "1800", "--",
             sys.executable, str(Path(__file__).resolve()), "--inside",
             "--runs", str(runs), "--scale", str(scale), "--json", str(out)],
            cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0 or not out.exists():
            raise VMError(f"6.1 VM run failed ({p.returncode}): "
                               f"{(p.stdout + p.stderr)[-2000:]}")
        result = json.loads(out.read_text())
        result["vm_wall_s"] = round(time.monotonic() - t, 1)
    for r in result["rows"]:
        log(f"6.1: {r['title']}: {r['config']}: wall {r['wall_ratio']:.2f}x, "
            f"cpu {r['cpu_ratio']:.2f}x")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per configuration (default: 5)")
    ap.add_argument("--scale", type=float, default=0.1,
                    help="multiply the iterations (default 0.1: emulation is 10-20x slower)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the result here (default: print it)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("run as root: it boots a VM and loads BPF programs in it")
    if args.runs < 1 or args.scale <= 0:
        ap.error("--runs must be at least 1 and --scale above 0")
    if args.inside:
        result = inside(args.runs, args.scale)
    else:
        subprocess.run(["make", "-s", "-C", str(BIN)], check=True)
        try:
            result = run(args.runs, args.scale,
                         log=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True))
        except VMError as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return 1
    text = json.dumps(result, indent=2) + "\n"
    if args.inside or args.json:
        Path(args.json or "/dev/stdout").write_text(text)
        return 0
    # On its own (the suite includes it in its report): results/<date>-linux-<kernel>.*
    import report

    stem = HERE / "results" / f"{datetime.date.today().isoformat()}-linux-{result['kernel']}"
    # not with_suffix: the kernel release has dots
    Path(f"{stem}.json").write_text(text)
    md = report.markdown({"date": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "kernel": os.uname().release, "cpus": os.cpu_count(),
        "runs": args.runs, "scale": args.scale, "wall_s": result["vm_wall_s"],
        "other_kernel": result}, stem.name)
    Path(f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
