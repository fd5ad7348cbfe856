"""Write throughput of the audit trail store, through the real writer.

    .venv/bin/python bench/store_write.py [--events 2000000] [--batch 1000]
                                          [--reuse-json] [--dir DIR] [--keep]

Synthetic events shaped like the sensor's (docs/events.md: process context
with parent and ancestors, user, container, and each type's own object) in a
build-and-network mix are handed to `StoreWriter.submit` in batches, as the
run loop does after each drain, as fast as the writer's queue takes them.
Each batch is built fresh (new dicts, new timestamps), like the enricher's,
in the same process, so the producer competes with the writer for the GIL
as the run loop does; --prebuild builds them all first, to measure the
writer alone.
The clock runs from the first submit until everything is committed and the
file is closed. Prints one JSON object on stdout: events/s, peak RSS of the
process, bytes on disk per event, and the writer's own counters (shed must
be 0: the bench waits for room instead of shedding).

By default the writer encodes each event's JSON itself (text output, or
filtered output); --reuse-json hands it the JSON lines, as the run loop does
when it writes unfiltered JSON lines anyway. Needs no root; the store goes
to a temporary directory (--dir) and is removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import tempfile
import time
from typing import Any

from ktrail.output.formats import dumps
from ktrail.sinks.base import Batch
from ktrail.sinks.store import StoreProcess
from ktrail.store.retention import Retention
from ktrail.store.writer import StoreWriter
from ktrail.units import Time

Event = dict[str, Any]

EXES = [
    ("/usr/bin/bash", ["bash"]), ("/usr/bin/make", ["make", "-j2"]),
    ("/usr/bin/gcc", ["gcc", "-O2", "-c", "src/main.c", "-o", "build/main.o"]),
    ("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", ["cc1", "-quiet", "src/main.c"]),
    ("/usr/bin/python3.11", ["python3", "-m", "pip", "install", "-r", "requirements.txt"]),
    ("/usr/bin/curl", ["curl", "-s", "https://127.0.0.1:8443/api/v1/status"]),
    ("/usr/bin/git", ["git", "fetch", "--prune", "origin"]),
    ("/usr/sbin/sshd", ["sshd: alice [priv]"]), ("/usr/bin/ssh-keygen", ["ssh-keygen", "-t",
                                                                         "ed25519", "-N", ""]),
    ("/usr/sbin/nginx", ["nginx: worker process"]), ("/usr/bin/ls", ["ls", "-la", "/tmp"]),
]
USERS = [(0, "root"), (1000, "alice"), (33, "www-data"), (1001, "bob")]
# Path and address patterns; each event draws its own (thousands of distinct
# paths, hundreds of peers), as a build or a busy server produces.
PATHS = ["/home/alice/project/build/obj{}.o", "/tmp/cc{}.s", "/etc/ld.so.cache",
         "/home/alice/.ssh/id_ed25519", "/var/log/nginx/access.log.{}",
         "/home/alice/project/.git/objects/pack/tmp_pack_{}", "/tmp/pip-build-env-{}/lib"]
ADDRS = ["127.0.0.1", "10.0.2.{}", "::1", "192.0.2.{}", "198.51.100.{}"]
# (type, share): fork/exec/exit of a build, its file changes, a server's connections.
MIX = [("exec", 8), ("fork", 8), ("exit", 8), ("open", 14), ("create", 10), ("rename", 5),
       ("unlink", 8), ("chmod", 3), ("utimes", 3), ("connect", 14), ("accept", 6),
       ("dns", 6), ("bind", 2), ("setuid", 2), ("memfd_create", 1), ("ptrace", 1),
       ("listen", 1)]


def _process(rng: random.Random, pid: int, boot_s: int) -> dict[str, Any]:
    exe, args = rng.choice(EXES)
    depth = rng.randint(2, 9)
    ancestors = [{"exec_id": f"{p}:{t}", "pid": p, "exe": e, "comm": os.path.basename(e)[:15]}
                 for p, t, e in [(rng.randint(2, 60000), rng.randint(100, 900000),
                                  rng.choice(EXES)[0]) for _ in range(depth - 1)]]
    ancestors.append({"exec_id": "1:24", "pid": 1, "exe": "/usr/lib/systemd/systemd",
                      "comm": "systemd"})
    par = ancestors[0]
    uid, name = rng.choice(USERS)
    container = ({"id": "4f1c2b3a9d8e", "full_id": "4f1c2b3a9d8e" + "0" * 52}
                 if rng.random() < 0.1 else None)
    ticks = rng.randint(1000, 2_000_000)
    start = boot_s + ticks / 100
    return {
        "pid": pid, "exec_id": f"{pid}:{ticks}",
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start))
        + f".{rng.randint(0, 999999999):09d}Z",
        "exe": exe, "name": os.path.basename(exe), "args": args, "args_truncated": False,
        "cwd": "/home/alice/project", "source": "exec",
        "parent": {"exec_id": par["exec_id"], "pid": par["pid"], "exe": par["exe"],
                   "comm": par["comm"], "args": [par["comm"]]},
        "ancestors": ancestors,
        "_user": (uid, name),
        "_container": container,
    }


def _typed(rng: random.Random, etype: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """The event's own object(s) and the syscall fields of evt."""
    path = rng.choice(PATHS).format(rng.randrange(3000))
    err = rng.random() < 0.1
    evt: dict[str, Any] = {"syscall": etype, "retval": -2 if err else 0,
                           "error": "ENOENT" if err else None}
    net = {"family": "ipv4", "type": "stream", "protocol": "tcp", "saddr": "10.0.2.15",
           "sport": rng.randint(32768, 60999),
           "daddr": rng.choice(ADDRS).format(rng.randrange(1, 255)),
           "dport": rng.choice([22, 53, 80, 443, 8443])}
    if etype == "exec":
        return {"exec": {"filename": ctx["exe"], "args": ctx["args"], "argc": len(ctx["args"]),
                         "args_truncated": False, "filename_truncated": False, "retval": 0,
                         "error": None, "kernel_spawned": False}}
    if etype == "fork":
        child = rng.randint(2000, 4_000_000)
        return {"fork": {"child": {"pid": child, "tid": child,
                                   "exec_id": f"{child}:{rng.randint(1000, 2_000_000)}"},
                         "thread": False}}
    if etype == "exit":
        return {"exit": {"code": 0, "signal": None, "signo": 0, "core_dumped": False,
                         "status": 0, "duration_ns": rng.randint(10**6, 10**10)}}
    if etype in ("open", "create"):
        return {"evt": evt, "file": {"path": path, "flags": ["O_WRONLY", "O_CREAT", "O_TRUNC"],
                                     "mode": "0644", "created": etype == "create"}}
    if etype == "rename":
        return {"evt": evt, "file": {"path": path, "new_path": path + ".new", "flags": 0}}
    if etype in ("unlink", "utimes"):
        return {"evt": evt, "file": {"path": path}}
    if etype == "chmod":
        return {"evt": evt, "file": {"path": path, "mode": "0755", "flags": 0}}
    if etype in ("connect", "accept", "bind", "listen"):
        return {"evt": evt, "net": net}
    if etype == "dns":
        net.update(type="dgram", protocol="udp", dport=53)
        return {"evt": evt, "net": net, "dns": {"query": "deb.debian.org", "qtype": "A",
                                                "id": rng.randint(0, 65535)}}
    if etype == "setuid":
        return {"evt": evt, "setuid": {"asked": {"real": 0, "effective": 0, "saved": None},
                                       "now": {"real": 0, "effective": 0, "saved": 0}}}
    if etype == "memfd_create":
        return {"evt": evt, "memfd": {"name": "jit-cache", "flags": ["MFD_CLOEXEC"]}}
    return {"evt": evt, "ptrace": {"request": "PTRACE_ATTACH", "request_num": 16,
                                   "target": {"pid": 4242, "exec_id": "4242:5555",
                                              "exe": "/usr/bin/bash", "comm": "bash"},
                                   "addr": 0, "data": 0}}


def templates(n: int, seed: int = 1) -> list[Event]:
    """n distinct events (time stamped later), from a few hundred processes."""
    rng = random.Random(seed)
    boot_s = int(time.time()) - 86400
    procs = [_process(rng, pid, boot_s) for pid in rng.sample(range(300, 400000), 400)]
    kinds = [t for t, share in MIX for _ in range(share)]
    out = []
    for _ in range(n):
        ctx = rng.choice(procs)
        uid, name = ctx["_user"]
        etype = rng.choice(kinds)
        typed = _typed(rng, etype, ctx)
        evt = {"type": etype, "time": "", "seq": rng.randint(0, 10**7), "cpu": rng.randint(0, 1),
               **typed.pop("evt", {})}
        proc = {"pid": ctx["pid"], "tid": ctx["pid"], "ppid": ctx["parent"]["pid"],
                "comm": ctx["name"][:15], "uid": uid, "gid": uid,
                **{k: v for k, v in ctx.items() if not k.startswith("_")}}
        container = ctx["_container"]
        e = {"evt": evt, "proc": proc, "user": {"uid": uid, "name": name},
             "container": container, **typed}
        if etype == "exec":
            e["user"].update(euid=uid, egid=uid, auid=1000)
        out.append(e)
    return out


class Stamper:
    """Fresh timestamps, ~7 us apart (about 150k events/s), as the enricher
    makes them: a Time, an integer until the encoder."""

    def __init__(self) -> None:
        self.ns = time.time_ns() - 3600 * 10**9

    def __call__(self) -> Time:
        self.ns += 6667
        return Time(self.ns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=1000, help="events per submit (one drain)")
    ap.add_argument("--reuse-json", action="store_true",
                    help="hand the writer each event's JSON, as unfiltered JSON output does")
    ap.add_argument("--prebuild", action="store_true",
                    help="build every batch before the clock starts: the writer alone, "
                         "without a producer competing for the GIL (keep --events small)")
    ap.add_argument("--process", action="store_true",
                    help="through the store sink `ktrail run` uses: the writer in its own "
                         "process, handed each batch's JSON lines")
    ap.add_argument("--dir", help="where to put the store (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the store file")
    args = ap.parse_args()

    pool = templates(5000)
    workdir = tempfile.mkdtemp(prefix="ktrail-store-bench-", dir=args.dir)
    path = os.path.join(workdir, "trail.db")
    # Retention as shipped (7 days, 1 GiB): on a long run the size limit is
    # enforced while writing, as it would be on a host.
    sink = StoreProcess(path, Retention()) if args.process else None
    writer = None if sink is not None else StoreWriter(path, Retention())
    (sink or writer).start()
    stamp = Stamper()
    rng = random.Random(2)
    submitted = 0

    def make(n: int) -> tuple[list[Event], bytes | None]:
        start = rng.randrange(len(pool) - n) if n < len(pool) else 0
        batch = [{**e, "evt": {**e["evt"], "time": stamp()}} for e in pool[start:start + n]]
        lines = (b"\n".join([dumps(e) for e in batch]) + b"\n") if args.reuse_json else None
        return batch, lines

    sizes = [min(args.batch, args.events - i) for i in range(0, args.events, args.batch)]
    ready = [make(n) for n in sizes] if args.prebuild else None
    t0 = time.perf_counter()
    for k, n in enumerate(sizes):
        batch, lines = ready[k] if ready is not None else make(n)
        # Measure capacity: wait for room rather than shed.
        if sink is not None:
            while sink.queued() > sink.max_bytes // 2:
                time.sleep(0.0005)
            sink.submit(Batch(batch))
        else:
            while writer.pending and writer.pending + n > writer.max_pending:
                time.sleep(0.0005)
            writer.submit(batch, lines=lines)
        submitted += n
    if sink is not None:
        sink.close()
    else:
        writer.close(timeout=600)
    elapsed = time.perf_counter() - t0
    stats = (sink or writer).stats()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    db_bytes = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    # VmHWM, not rusage's maxrss: that one is inherited from the parent
    # across fork and exec, so a big parent (the bench suite) shows through.
    with open("/proc/self/status") as f:
        peak_rss = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
    print(json.dumps({
        "bench": "store_write",
        "mode": ("store process" if args.process else "reuse-json" if args.reuse_json
                 else "writer-encodes") + (", prebuilt" if args.prebuild else ""),
        "events": submitted,
        "batch": args.batch,
        "seconds": round(elapsed, 3),
        "events_per_s": round(submitted / elapsed),
        "peak_rss_bytes": peak_rss,
        "peak_rss_mib": round(peak_rss / (1 << 20), 1),
        "rows_in_store": rows,
        "db_bytes": db_bytes,
        "bytes_per_event": round(db_bytes / rows) if rows else None,
        "writer": {k: stats.get(k) for k in ("written", "shed", "failed", "errors", "batches",
                                             "busy_s")},
        "retention": stats["retention"],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }))
    if args.keep:
        print(f"store kept at {path}", file=__import__("sys").stderr)
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
