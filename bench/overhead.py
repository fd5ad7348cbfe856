"""Syscall overhead of ktrail profiles, measured against no tracing.

    sudo .venv/bin/python bench/overhead.py [--runs 5]

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
    "open+close x1M (watched, filtered in kernel)": (["open_close", "1000000"], 2_000_000),
    "fork+exec x2k": (["fork_exec", "2000"], None),
}
CONFIGS = {
    "no tracing": None,
    "ktrail default": ["--profile", "default"],
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
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(HERE / "workloads")], check=True)
    results: dict[str, dict[str, list[float]]] = {w: {c: [] for c in CONFIGS} for w in WORKLOADS}
    for _ in range(args.runs):
        for cname, cargs in CONFIGS.items():
            sensor = start_sensor(cargs) if cargs is not None else None
            try:
                for wname, (cmd, _) in WORKLOADS.items():
                    results[wname][cname].append(
                        timed([str(HERE / "workloads" / cmd[0]), *cmd[1:]]))
            finally:
                if sensor is not None:
                    sensor.terminate()
                    sensor.wait(timeout=60)
    rows = []
    for wname, (_, nsys) in WORKLOADS.items():
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
        "kernel": platform.release(), "cpus": os.cpu_count(), "runs": args.runs, "rows": rows,
    }
    stamp = datetime.date.today().isoformat()
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
