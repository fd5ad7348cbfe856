"""ktrail benchmark suite: overhead and capacity, beside auditd and bpftrace.

    scripts/setup.sh bench [options]          (installs what it needs, then runs this)
    .venv/bin/python bench/run.py [--runs 5] [--scale 1] [--configs A,B] [--no-capacity]

Builds the C workloads, runs every (workload, configuration) pair
interleaved (for each run, for each workload: A B C ...) so drift hits all
configurations alike, measures capacity with event storms, and writes
bench/results/<date>.json, <date>.md and <date>-*.png. Method and targets:
docs/performance.md.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import capacity
import other_kernel
import report
import tracers
import workloads

HERE = Path(__file__).resolve().parent
BASE = "no tracing"
# name -> how to make it; ktrail runs as an operator would run it, to a file.
CONFIGS: dict[str, Any] = {
    BASE: tracers.Tracer,
    "ktrail default": lambda: tracers.Ktrail(
        "ktrail default", ["--profile", "default", "--no-rules", "--no-store"]),
    "ktrail default + rules": lambda: tracers.Ktrail(
        "ktrail default + rules", ["--profile", "default", "--no-store"]),
    # `ktrail run` as shipped: default profile, default rules, the trail store.
    "ktrail default + rules + store": lambda: tracers.Ktrail(
        "ktrail default + rules + store", ["--profile", "default"], store=True),
    "ktrail full": lambda: tracers.Ktrail(
        "ktrail full", ["--profile", "full", "--no-rules", "--no-store"]),
    "auditd": tracers.Auditd,
    "bpftrace": tracers.Bpftrace,
}
# Not in the default set: on this VM it is the same as "ktrail default"
# (fentry is refused); on kernels with fentry it shows what tracepoints cost.
EXTRA = {
    "ktrail default (tracepoints only)": lambda: tracers.Ktrail(
        "ktrail default (tracepoints only)",
        ["--profile", "default", "--no-rules", "--no-store", "--syscall-hooks", "tracepoint"]),
}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def our_programs() -> list[str]:
    """BPF programs of ktrail or bpftrace still loaded (there must be none)."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        return [f"bpftool failed: {out.stderr.strip()}"]
    progs = json.loads(out.stdout or "[]")
    return [f"{p.get('id')} {p.get('name')}" for p in progs
            if str(p.get("name", "")).startswith("kt_")
            or "bpftrace" in {x.get("comm") for x in p.get("pids", [])}]


def overhead(names: list[str], runs: int, scale: float) -> tuple[list[dict[str, Any]], list[str]]:
    wls = workloads.workloads(scale)
    log("counting each workload's syscalls (strace -c, once)")
    nsys = {w.key: workloads.count_syscalls(w) for w in wls}
    made = {n: (CONFIGS | EXTRA)[n]() for n in names}
    times: dict[tuple[str, str], list[float]] = {(w.key, n): [] for w in wls for n in names}
    meas: dict[tuple[str, str], list[tracers.Measurement]] = {k: [] for k in times}
    notes: list[str] = []
    try:
        for r in range(runs):
            for w in wls:
                for n, t in made.items():
                    t.start()
                    try:
                        secs = timed(w.command())
                    finally:
                        m = t.stop()
                    times[w.key, n].append(secs)
                    meas[w.key, n].append(m)
                    log(f"run {r + 1}/{runs}: {w.key}: {n}: {secs:.3f} s"
                        + (f", {m.delivered} events, {m.lost} lost" if m.delivered is not None
                           else ""))
    finally:
        for t in made.values():
            t.close()
            if getattr(t, "note", None):
                notes.append(t.note)
    rows = []
    for w in wls:
        base = statistics.median(times[w.key, BASE])
        for n in names:
            ts, ms = times[w.key, n], meas[w.key, n]
            med = statistics.median(ts)

            def mid(attr: str, ms: list[tracers.Measurement] = ms) -> float | None:
                vals = [getattr(m, attr) for m in ms if getattr(m, attr) is not None]
                return statistics.median(vals) if vals else None

            rows.append({
                "workload": w.key, "title": w.title, "config": n, "runs": len(ts),
                "median_s": round(med, 4), "min_s": round(min(ts), 4), "max_s": round(max(ts), 4),
                "ratio": round(med / base, 3), "ratio_min": round(min(ts) / base, 3),
                "ratio_max": round(max(ts) / base, 3),
                "syscalls": nsys[w.key],
                "ns_per_syscall": round((med - base) / nsys[w.key] * 1e9, 1),
                "events_delivered": mid("delivered"), "events_lost": mid("lost"),
                "lost_max": max((m.lost for m in ms if m.lost is not None), default=None),
                "reconciled": (all(m.reconciled for m in ms)
                               if ms and ms[0].reconciled is not None else None),
                "cpu_s": _r(mid("cpu_s")), "peak_rss_mb": _r(mid("peak_rss_mb"), 1),
                "startup_s": _r(mid("startup_s")),
            })
    return rows, notes


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per configuration (default: 5)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every workload's iterations (0.1 under emulation)")
    ap.add_argument("--configs", help="comma-separated configurations besides 'no tracing' "
                    f"(default: all of {', '.join(c for c in CONFIGS if c != BASE)}; "
                    f"also: {', '.join(EXTRA)})")
    ap.add_argument("--no-capacity", action="store_true", help="skip the capacity storms")
    ap.add_argument("--no-overhead", action="store_true", help="skip the overhead runs")
    ap.add_argument("--no-other-kernel", action="store_true",
                    help="skip the unwatched-syscall runs on Debian 12's 6.1 under qemu")
    ap.add_argument("--out", default=str(HERE / "results"), help="results directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("run as root: it loads BPF programs and audit rules")
    if args.runs < 1 or args.scale <= 0:
        ap.error("--runs must be at least 1 and --scale above 0")
    names = [BASE, *(c for c in CONFIGS if c != BASE)]
    if args.configs:
        names = [BASE, *(c.strip() for c in args.configs.split(",") if c.strip() != BASE)]
        unknown = [c for c in names if c not in CONFIGS and c not in EXTRA]
        if unknown:
            ap.error(f"unknown configuration(s): {', '.join(unknown)}")
    started = time.monotonic()
    workloads.prepare(args.scale)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpus": os.cpu_count(), "runs": args.runs,
        "scale": args.scale, "configs": names,
        "workloads": {w.key: {"title": w.title, "note": w.note}
                      for w in workloads.workloads(args.scale)},
    }
    try:
        if not args.no_overhead:
            result["overhead"], result["notes"] = overhead(names, args.runs, args.scale)
        if not args.no_capacity:
            result["capacity"] = capacity.run(log=lambda m: log(m))
            # In a fresh process: memory freed by the storms would be reused
            # and hide what the table takes.
            result["proctable"] = json.loads(subprocess.run(
                [sys.executable, str(HERE / "proctable.py")], check=True, capture_output=True,
                text=True).stdout)
            log(f"process table: {result['proctable']}")
            result["store"] = {}
            for mode, extra in (("writer encodes", []), ("JSON reused", ["--reuse-json"]),
                                ("store process", ["--process"])):
                result["store"][mode] = json.loads(subprocess.run(
                    [sys.executable, str(HERE / "store_write.py"), "--events", "300000",
                     *extra], check=True, capture_output=True, text=True).stdout)
                log(f"store ({mode}): {result['store'][mode]}")
        if not args.no_other_kernel:
            result["other_kernel"] = other_kernel.run(runs=args.runs, log=lambda m: log(m))
    except (tracers.BenchError, other_kernel.VMError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    finally:
        workloads.cleanup()
    result["leftover_programs"] = our_programs()
    result["wall_s"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / datetime.date.today().isoformat()
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = report.markdown(result, stem.name)
    stem.with_suffix(".md").write_text(md)
    report.plots(result, stem)
    print(md)
    log(f"wrote {stem}.json, .md and -*.png in {result['wall_s']:.0f} s")
    if result["leftover_programs"]:
        log(f"error: BPF programs left behind: {result['leftover_programs']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
