"""Syscall overhead of ktrail profiles, measured against no tracing.

    sudo .venv/bin/python bench/overhead.py [--runs 5] [--scale 1] [--configs A,B]

On another kernel (Debian 12's 6.1 under qemu, where fentry works; CPU-bound
work there is 10-20x slower, hence --scale):

    tests/vm/boot.sh --share bench/results -- .venv/bin/python bench/overhead.py --scale 0.1

Builds the C workloads, then runs every (workload, configuration) pair
interleaved (A B C A B C ...) so drift hits all configurations alike, and
writes bench/results/overhead-<date>.json and a markdown table. The sensor
runs as `ktrail run --format json --output /dev/null`, as an operator would.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "getppid x5M (unwatched)": (["getppid", "5000000"], 5_000_000),
    "open+close x1M (watched, filtered in kernel)": (
        ["open_close", "1000000", "/tmp/ktrail-bench-open"], 2_000_000),
    "fork+exec x2k": (["fork_exec", "2000"], None),
}
CONFIGS = {
    "no tracing": None,
    "ktrail default": ["--profile", "default"],
    # What the default profile costs where the kernel has no fentry.
    "ktrail default (tracepoints only)": ["--profile", "default", "--syscall-hooks", "tracepoint"],
    "ktrail full": ["--profile", "full"],
}


def start_sensor(args: list[str]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [sys.executable, "-m", "ktrail", "run", "--format", "json", "--output", "/dev/null",
         "--stats-interval", "0", *args],
        stderr=subprocess.PIPE,
    )
    assert p.stderr is not None
    while True:
        line = p.stderr.readline().decode()
        if not line:
            raise RuntimeError("ktrail did not start")
        if "ready in" in line:
            return p


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every workload's iterations (0.1 under emulation)")
    ap.add_argument("--configs", help="comma-separated configurations to run "
                    f"(default: all): {', '.join(CONFIGS)}")
    args = ap.parse_args()
    configs = dict(CONFIGS)
    if args.configs:
        wanted = ["no tracing", *(c.strip() for c in args.configs.split(","))]
        unknown = [c for c in wanted if c not in CONFIGS]
        if unknown:
            ap.error(f"unknown configuration(s): {', '.join(unknown)}")
        configs = {c: CONFIGS[c] for c in dict.fromkeys(wanted)}
    workloads = {w: ([cmd[0], str(max(1, int(int(cmd[1]) * args.scale))), *cmd[2:]],
                     int(n * args.scale) if n else None)
                 for w, (cmd, n) in WORKLOADS.items()}
    subprocess.run(["make", "-s", "-C", str(HERE / "workloads")], check=True)
    Path("/tmp/ktrail-bench-open").write_text("x\n")
    results: dict[str, dict[str, list[float]]] = {w: {c: [] for c in configs} for w in workloads}
    for _ in range(args.runs):
        for cname, cargs in configs.items():
            sensor = start_sensor(cargs) if cargs is not None else None
            try:
                for wname, (cmd, _) in workloads.items():
                    results[wname][cname].append(
                        timed([str(HERE / "workloads" / cmd[0]), *cmd[1:]]))
                    print(f"bench: {cname}: {wname}: {results[wname][cname][-1]:.3f} s",
                          file=sys.stderr, flush=True)
            finally:
                if sensor is not None:
                    sensor.terminate()
                    sensor.wait(timeout=60)
    rows = []
    for wname, (_, nsys) in workloads.items():
        base = statistics.median(results[wname]["no tracing"])
        for cname, times in results[wname].items():
            med = statistics.median(times)
            rows.append({
                "workload": wname, "config": cname, "median_s": round(med, 4),
                "min_s": round(min(times), 4), "max_s": round(max(times), 4),
                "ratio": round(med / base, 3),
                "ns_per_syscall": round((med - base) / nsys * 1e9, 1) if nsys else None,
            })
    out = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpus": os.cpu_count(), "runs": args.runs,
        "scale": args.scale, "rows": rows,
    }
    stamp = f"{datetime.date.today().isoformat()}-{platform.release()}"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"overhead-{stamp}.json").write_text(json.dumps(out, indent=2) + "\n")
    table = ["| workload | config | median s | spread (min-max) | ratio | ns added/syscall |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ns = "" if r["ns_per_syscall"] is None else f"{r['ns_per_syscall']:+.1f}"
        table.append(f"| {r['workload']} | {r['config']} | {r['median_s']:.3f} | "
                     f"{r['min_s']:.3f}-{r['max_s']:.3f} | {r['ratio']:.3f} | {ns} |")
    text = "\n".join(table) + "\n"
    (HERE / "results" / f"overhead-{stamp}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
