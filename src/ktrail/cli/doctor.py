"""`ktrail doctor`: what this kernel offers, and what the sensor would use."""

from __future__ import annotations

import argparse
import sys

import orjson

from ktrail.loader import features, libbpf
from ktrail.loader.catalog import CATALOG
from ktrail.loader.sensor import make_plan


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check that ktrail can run here, and how",
                       description="Probe the kernel by loading and attaching a tiny program "
                                   "per hook mechanism; exit 2 when the sensor cannot run.")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=doctor)


def report() -> dict:
    problems = features.preflight()
    out: dict = {
        "kernel": features.kernel_release(),
        "btf": features.has_btf(),
        "lockdown": features.lockdown_mode() or "unknown (securityfs not mounted)",
        "privileged": not any("needs root" in p for p in problems),
        "tracefs": None,
        "mechanisms": {},
        "events": {},
        "problems": problems,
    }
    if out["privileged"]:
        out["tracefs"] = features.ensure_tracefs()
        try:
            for m in features.MECHANISMS:
                p = features.probe(m)
                out["mechanisms"][m] = {"available": p.ok, "detail": p.detail}
        except libbpf.LibbpfMissing as e:
            problems.append(str(e))
        if out["mechanisms"]:
            plan = make_plan(frozenset(CATALOG))
            for name in CATALOG:
                if name in plan.missing:
                    out["events"][name] = {"hooks": None, "problem": plan.missing[name]}
                    problems.append(f"event {name}: {plan.missing[name]}")
                elif name in plan.unavailable:
                    out["events"][name] = {"hooks": [], "notes": [plan.unavailable[name]]}
                else:
                    out["events"][name] = {
                        "hooks": [f"{h.mechanism}:{h.target}" for h in plan.hooks[name]],
                        "notes": plan.skipped.get(name, []),
                    }
    out["ok"] = not problems
    return out


def doctor(args: argparse.Namespace) -> int:
    r = report()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(r, option=orjson.OPT_INDENT_2) + b"\n")
        return 0 if r["ok"] else 2
    w = sys.stdout.write
    w(f"kernel     {r['kernel']}\n")
    w(f"BTF        {'yes (/sys/kernel/btf/vmlinux)' if r['btf'] else 'NO'}\n")
    w(f"lockdown   {r['lockdown']}\n")
    if r["tracefs"]:
        w(f"tracefs    {r['tracefs']}\n")
    if r["mechanisms"]:
        w("\nhook mechanisms (each probed by loading and attaching a program):\n")
        for m, v in r["mechanisms"].items():
            w(f"  {m:<11} {'yes' if v['available'] else 'no ':<4} {v['detail']}\n")
        w("\nevent types:\n")
        for name, v in r["events"].items():
            if v["hooks"] is None:
                w(f"  {name:<20} UNAVAILABLE: {v['problem']}\n")
            elif not v["hooks"]:
                w(f"  {name:<20} not traced: {'; '.join(v['notes'])}\n")
            else:
                notes = f"  ({'; '.join(v['notes'])})" if v["notes"] else ""
                w(f"  {name:<20} {' + '.join(v['hooks'])}{notes}\n")
    if r["problems"]:
        w("\nktrail cannot run here:\n")
        for p in r["problems"]:
            w(f"  - {p}\n")
        return 2
    w("\nready: ktrail run will work on this machine\n")
    return 0
