"""The report: a markdown table per part, and PNG plots (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _n(x: Any, fmt: str = "{:,}") -> str:
    return "" if x is None else fmt.format(x)


def markdown(r: dict[str, Any], stem: str) -> str:
    out = [f"# ktrail bench {r['date']}",
           "",
           f"Linux {r['kernel']}, {r['cpus']} CPUs, {r['runs']} runs per configuration, "
           f"interleaved; workload scale x{r['scale']}; {r.get('wall_s', 0):.0f} s in all.",
           ""]
    if "overhead" in r:
        out += ["## Overhead",
                "",
                "Median of the runs; spread is min-max as a ratio to the no-tracing median. "
                "`ns/syscall` is the added time over every syscall the workload makes "
                "(counted once with `strace -c`). Events and lost are per run (median; "
                "`max lost` is the worst run); `reconciled` means every record the kernel "
                "numbered was read or counted as dropped. CPU is the tracer's own, from "
                "ready to exit (auditd: plus the kauditd kernel thread).",
                "",
                "| workload | config | median s | ratio | spread | ns/syscall | events | "
                "lost (max) | reconciled | CPU s | peak RSS MB | start-up s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in r["overhead"]:
            rec = {True: "yes", False: "**no**", None: "n/a"}[row["reconciled"]]
            lost = "" if row["events_lost"] is None else (
                f"{row['events_lost']:,.0f} ({row['lost_max']:,})")
            out.append(
                f"| {row['title']} | {row['config']} | {row['median_s']:.3f} | "
                f"{row['ratio']:.2f} | {row['ratio_min']:.2f}-{row['ratio_max']:.2f} | "
                f"{row['ns_per_syscall']:+.0f} | {_n(row['events_delivered'], '{:,.0f}')} | "
                f"{lost} | {rec if row['config'] != 'no tracing' else ''} | "
                f"{_n(row['cpu_s'], '{:.2f}')} | {_n(row['peak_rss_mb'], '{:.0f}')} | "
                f"{_n(row['startup_s'], '{:.2f}')} |")
        out += ["", *(f"- {n}" for n in r.get("notes", [])), ""]
        out += [f"![overhead]({stem}-overhead.png)", ""]
    if "capacity" in r:
        c = r["capacity"]
        out += ["## Capacity",
                "",
                f"Storms of `prctl` events at rising rates ({c['step_s']:.0f} s each; "
                "generator pinned to CPU 0, pipeline to CPU 1). Sustained: zero lost and "
                f"caught up within {c['lag_limit_s']} s of the storm's end.",
                "",
                "| stage | highest sustained rate (events/s) | CPU at that rate (cores) | "
                "first failing step |",
                "|---|---|---|---|"]
        for mode, m in c["modes"].items():
            fail = [s for s in m["steps"] if not s["sustained"]]
            first = (f"{fail[0]['rate_achieved']:,}/s: {fail[0]['lost']:,} lost, "
                     f"lag {fail[0]['lag_s']} s" if fail else "none (generator's limit)")
            out.append(f"| {mode} | {m['max_sustained']:,} | {_n(m['cpu_at_max'], '{:.2f}')} | "
                       f"{first} |")
        out += ["", f"![capacity]({stem}-capacity.png)", ""]
    if r.get("proctable"):
        t = r["proctable"]
        rest = [x["peak_rss_mb"] for x in r.get("overhead", [])
                if x["config"] == "ktrail default" and x["workload"] == "getppid"]
        total = f"; with the sensor's RSS at rest ({rest[0]:.0f} MB), about " \
                f"{rest[0] + t['rss_added_mb']:.0f} MB" if rest else ""
        out += ["## Process table",
                "",
                f"Tracking {t['processes']:,} live processes (each with a realistic argv and "
                f"the context its first event builds) adds {t['rss_added_mb']} MB "
                f"({t['bytes_per_process']:,} bytes each){total}.",
                ""]
    if r.get("store"):
        out += ["## Store write path",
                "",
                "`bench/store_write.py --events 300000`: synthetic events shaped like the "
                "sensor's, through the real writer (its thread in the same process, or the "
                "store process `ktrail run` uses: `--process`), clock until committed and "
                "closed.",
                "",
                "| mode | events/s | peak RSS MB | bytes on disk per event |",
                "|---|---|---|---|"]
        for mode, s in r["store"].items():
            out.append(f"| {mode} | {_n(s.get('events_per_s'), '{:,.0f}')} | "
                       f"{_n(s.get('peak_rss_mib'), '{:.0f}')} | "
                       f"{_n(s.get('bytes_per_event'), '{:.0f}')} |")
        out.append("")
    if r.get("other_kernel"):
        k = r["other_kernel"]
        out += [f"## Unwatched syscalls on Linux {k['kernel']} (fentry), under qemu",
                "",
                "Debian 12's kernel booted with `tests/vm/boot.sh` (software emulation, "
                f"{k['runs']} interleaved runs, iterations x{k['scale']}). CPU is the "
                "workload's own user + system time (wait4); the guest's wall clock is "
                "noisier under emulation. The sensor is pinned to the second vCPU.",
                "",
                "| workload | config | wall s | wall ratio (spread) | CPU s | "
                "CPU ratio (spread) | CPU ns/syscall |",
                "|---|---|---|---|---|---|---|"]
        for row in k["rows"]:
            w, c = row["wall_spread"], row["cpu_spread"]
            out.append(f"| {row['title']} | {row['config']} | {row['wall_s']:.3f} | "
                       f"{row['wall_ratio']:.2f} ({w[0]:.2f}-{w[1]:.2f}) | {row['cpu_s']:.3f} | "
                       f"{row['cpu_ratio']:.2f} ({c[0]:.2f}-{c[1]:.2f}) | "
                       f"{row['cpu_ns_per_syscall']:+,} |")
        out += ["", *(f"- {c}: {line}" for c, line in k["ready"].items()), ""]
    if "leftover_programs" in r:
        left = r["leftover_programs"]
        out += [f"BPF programs left behind: {', '.join(left) if left else 'none'}.", ""]
    return "\n".join(out)


def plots(r: dict[str, Any], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "overhead" in r:
        rows = r["overhead"]
        wls = list(dict.fromkeys(x["workload"] for x in rows))
        cfgs = [c for c in dict.fromkeys(x["config"] for x in rows) if c != "no tracing"]
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.8 / len(cfgs)
        for i, c in enumerate(cfgs):
            sel = [next(x for x in rows if x["workload"] == w and x["config"] == c) for w in wls]
            xs = [j + (i - (len(cfgs) - 1) / 2) * width for j in range(len(wls))]
            ys = [x["ratio"] for x in sel]
            err = [[y - x["ratio_min"] for y, x in zip(ys, sel, strict=True)],
                   [x["ratio_max"] - y for y, x in zip(ys, sel, strict=True)]]
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=c)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(wls)), wls)
        ax.set_ylabel("time / no tracing (log; bars: median, whiskers: min-max)")
        ax.set_title(f"Workload slowdown, Linux {r['kernel']}, {r['runs']} runs")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(f"{stem}-overhead.png", dpi=110)
        plt.close(fig)
    if "capacity" in r:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for mode, m in r["capacity"]["modes"].items():
            st = m["steps"]
            xs = [s["rate_achieved"] / 1000 for s in st]
            a1.plot(xs, [s["records"] / max(1, s["sent"]) * 100 for s in st], "o-", label=mode)
            a2.plot(xs, [s["cpu_core"] for s in st], "o-", label=mode)
        a1.set_xlabel("storm rate (k events/s)")
        a1.set_ylabel("events delivered (% of sent)")
        a1.set_title("Delivery")
        a2.set_xlabel("storm rate (k events/s)")
        a2.set_ylabel("pipeline CPU (cores)")
        a2.axhline(1.0, color="grey", linewidth=0.8)
        a2.set_title("CPU")
        a1.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(f"{stem}-capacity.png", dpi=110)
        plt.close(fig)
