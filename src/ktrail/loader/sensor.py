"""The sensor: the set of BPF programs and maps managed as one unit.

Lifecycle: plan (which hook per enabled event type, no kernel changes) ->
start (open, configure rodata and map sizes, load, attach) -> close.
"""

from __future__ import annotations

import os
import platform
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ktrail.bpf import object_path
from ktrail.decode.schema import STATS
from ktrail.events.registry import EventType, Syscall
from ktrail.events.values import uring_mask
from ktrail.loader import features, libbpf
from ktrail.loader.catalog import (
    CATALOG,
    RAW_FALLBACK,
    RAW_PROGRAMS,
    Hook,
    syscall_programs,
)
from ktrail.loader.ignore import Ignore
from ktrail.loader.watch import WatchSet

# Several of the largest records (exec: ~8 KiB) must fit at once.
MIN_RING_BYTES = 64 << 10
# The ring's size is the map's max_entries: a 32-bit power of two.
MAX_RING_BYTES = 1 << 31


class SensorError(RuntimeError):
    """The sensor cannot start; the message says why, for the operator.
    `errno` is the kernel's answer when it refused something."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass
class SensorConfig:
    events: frozenset[str] = frozenset(CATALOG)
    ring_bytes: int = 8 << 20
    trace_threads: bool = False
    # Wake the reader early once this share of the ring is full; below it the
    # reader drains on its own timer and no submit pays for a wakeup.
    wakeup_fraction: float = 0.25
    # Paths whose opens are reported (`open` events), by device and inode.
    watch_paths: tuple[str, ...] = ()
    # `open` for every open for writing too (the `full` profile).
    open_writes: bool = False
    # Every ptrace request, not only attach/seize/poke (the `full` profile).
    ptrace_all: bool = False
    # Trace syscalls that have no tracepoint through the raw syscall hooks,
    # which cost every syscall (the `full` profile).
    raw_fallback: bool = False
    # Every io_uring opcode, not only opens/connects/renames (full profile).
    uring_all: bool = False
    # "auto": fentry/fexit on syscall functions where the kernel allows,
    # else tracepoints; "tracepoint": tracepoints only.
    syscall_hooks: str = "auto"
    # Never reported (the configuration's `ignore`): filtered in the kernel.
    ignore: Ignore = field(default_factory=Ignore)


@dataclass
class Plan:
    """Chosen hooks per event type, and why an alternative was skipped."""

    hooks: dict[str, list[Hook]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)       # cannot run: an error
    unavailable: dict[str, str] = field(default_factory=dict)   # left out, with the reason
    raw_syscalls: set[str] = field(default_factory=set)


def _syscall_hooks(name: str, syscalls: tuple[str, ...], plan: Plan,
                   has_syscall: Callable[[str], bool], has_function: Callable[[str], bool],
                   raw_fallback: bool) -> list[Hook]:
    hooks: list[Hook] = []
    # fentry/fexit first: any syscall tracepoint slows every syscall on the
    # machine, a trampoline only the syscall it is on.
    fentry = [sc for sc in syscalls if has_function(sc)]
    if fentry:
        programs = tuple(p for sc in fentry for p in syscall_programs(sc, "fentry"))
        hooks.append(Hook("fentry", programs, "fentry/fexit:" + ",".join(fentry)))
    rest = [sc for sc in syscalls if sc not in fentry]
    present = [sc for sc in rest if has_syscall(sc)]
    absent = [sc for sc in rest if sc not in present]
    if present:
        programs = tuple(p for sc in present for p in syscall_programs(sc))
        hooks.append(Hook("tracepoint", programs, "syscalls:" + ",".join(present)))
    raw = [sc for sc in absent if platform.machine() in RAW_FALLBACK.get(sc, {})]
    if raw and raw_fallback:
        hooks.append(Hook("raw_tp", RAW_PROGRAMS,
                          "raw_syscalls:sys_enter/sys_exit for " + ",".join(raw)
                          + " (costs every syscall)"))
        plan.raw_syscalls.update(raw)
        absent = [sc for sc in absent if sc not in raw]
    elif raw:
        plan.skipped.setdefault(name, []).append(
            f"no tracepoint for {', '.join(raw)} (compiled out of this kernel); attempts are "
            "traced through the raw syscall hooks only in the full profile, as they cost "
            "every syscall"
        )
        absent = [sc for sc in absent if sc not in raw]
    if absent:
        plan.skipped.setdefault(name, []).append(
            f"no tracepoint for {', '.join(absent)} on this kernel"
        )
    return hooks


def _choose(name: str, choices: tuple[Hook, ...], plan: Plan, has: Callable[[str], bool],
            has_tracepoint: Callable[[str], bool]) -> Hook | None:
    """The first usable hook; None after recording why there is none."""
    no_mechanism = False
    for hook in choices:
        if not has(hook.mechanism):
            why = f"{hook.mechanism} unavailable"
            no_mechanism = True
        elif hook.tracepoint and not has_tracepoint(hook.tracepoint):
            why = f"no tracepoint {hook.tracepoint} on this kernel"
        else:
            return hook
        plan.skipped.setdefault(name, []).append(why)
    why = "; ".join(plan.skipped[name])
    if no_mechanism:
        plan.missing[name] = "no usable hook: " + why
    else:
        # The kernel lacks what the type watches (io_uring compiled out,
        # say): nothing to record, so leave it out and say so.
        plan.unavailable[name] = why
    return None


def make_plan(events: frozenset[str], has: Callable[[str], bool] = features.has,
              has_syscall: Callable[[str], bool] = features.has_syscall_tracepoint,
              raw_fallback: bool = False,
              has_tracepoint: Callable[[str], bool] = features.has_tracepoint,
              has_function: Callable[[str], bool] = features.has_syscall_function,
              syscall_hooks: str = "auto") -> Plan:
    """Hooks per event type. ``syscall_hooks`` is "auto" (fentry where the
    kernel allows, else tracepoints) or "tracepoint" (tracepoints only)."""
    plan = Plan()
    tracepoints = has("tracepoint")
    fentry = syscall_hooks == "auto" and has("fentry")
    for name in sorted(events):
        spec = CATALOG[name]
        chosen: list[Hook] = []
        if spec.choices:
            hook = _choose(name, spec.choices, plan, has, has_tracepoint)
            if hook is None:
                continue
            chosen.append(hook)
        if spec.syscalls:
            hooks = _syscall_hooks(
                name, spec.syscalls, plan,
                lambda sc: tracepoints and has_syscall(sc),
                lambda sc: fentry and has_function(sc),
                raw_fallback and has("raw_tp"),
            )
            if hooks:
                chosen += hooks
            elif chosen:
                plan.skipped.setdefault(name, []).append(
                    f"{', '.join(spec.syscalls)} not hooked: failed attempts are not seen")
            elif name not in plan.skipped:
                plan.missing[name] = "no syscall tracepoint available for it"
                continue
            else:
                plan.unavailable[name] = "; ".join(plan.skipped[name])
                continue
        plan.hooks[name] = chosen
    return plan


def ring_size(nbytes: int) -> int:
    # The kernel wants a power of two, at least one page.
    size = 4096
    while size < nbytes:
        size <<= 1
    return size


@dataclass
class KernelStats:
    seq: np.ndarray              # per CPU: records attempted
    dropped: np.ndarray          # per CPU x type slot: records not reserved
    forced_wakeups: int

    def dropped_by_type(self) -> dict[str, int]:
        totals = self.dropped.sum(axis=0)
        return {t.name.lower(): int(totals[t]) for t in EventType}

    @property
    def dropped_total(self) -> int:
        return int(self.dropped.sum())


class Sensor:
    def __init__(self, config: SensorConfig) -> None:
        self.config = config
        self.plan = make_plan(config.events, raw_fallback=config.raw_fallback,
                              syscall_hooks=config.syscall_hooks)
        if self.plan.missing:
            raise SensorError(
                "; ".join(f"{name}: {why}" for name, why in self.plan.missing.items())
            )
        self.ring_bytes = ring_size(config.ring_bytes)
        self._obj: libbpf.Object | None = None
        self._links: list[libbpf.Link] = []
        self._ncpus = 0
        self.watch: WatchSet | None = None

    def start(self) -> None:
        wanted = {p for hooks in self.plan.hooks.values() for h in hooks for p in h.programs}
        obj = libbpf.Object(object_path("ktrail"))
        self._obj = obj
        try:
            targets = features.syscall_functions() if any(
                h.mechanism == "fentry" for hooks in self.plan.hooks.values() for h in hooks
            ) else {}
            for prog in obj.programs():
                prog.set_autoload(prog.name in wanted)
                # fentry/fexit programs name the x86_64 function in their
                # section; the kernel's may differ (arch, alias).
                if prog.name in wanted and prog.name.startswith(("kt_fentry_", "kt_fexit_")):
                    sc = prog.name.split("_", 2)[2]
                    prog.set_attach_target(targets[sc])
            obj.map("kt_events").set_max_entries(self.ring_bytes)
            mask = 0
            for name in self.plan.hooks:
                mask |= 1 << CATALOG[name].id
            watching = bool(self.config.watch_paths) and "open" in self.plan.hooks
            ignore = self.config.ignore
            ignore_paths = bool(ignore.paths) and bool(
                {"open", "create"} & self.plan.hooks.keys())
            obj.set_rodata(
                {
                    "kt_trace_threads": self.config.trace_threads,
                    "kt_wakeup_bytes": int(self.ring_bytes * self.config.wakeup_fraction),
                    "kt_enabled_mask": mask,
                    "kt_watch_enabled": watching,
                    "kt_open_writes": self.config.open_writes,
                    "kt_ptrace_all": self.config.ptrace_all,
                    "kt_self_tgid": os.getpid(),
                    "kt_ignore_enabled": bool(ignore.pids or ignore.uids or ignore.comms),
                    "kt_ignore_paths": ignore_paths,
                    "kt_uring_ops": uring_mask(self.config.uring_all),
                }
            )
            obj.load()
            for sc in self.plan.raw_syscalls:
                nr = RAW_FALLBACK[sc][platform.machine()]
                obj.map("kt_raw_nr").update(struct.pack("<I", nr),
                                            struct.pack("<I", int(Syscall[sc])))
            one = struct.pack("<B", 1)
            for pid in ignore.pids:
                obj.map("kt_ignore_pid").update(struct.pack("<I", pid), one)
            for uid in ignore.uids:
                obj.map("kt_ignore_uid").update(struct.pack("<I", uid), one)
            for comm in ignore.comms:
                obj.map("kt_ignore_comm").update(comm.encode()[:15].ljust(16, b"\0"), one)
            if watching or ignore_paths:
                self.watch = WatchSet(obj.map("kt_watch"),
                                      self.config.watch_paths if watching else (),
                                      ignore.paths if ignore_paths else ())
                self.watch.refresh()
            for prog in obj.programs():
                if prog.name in wanted:
                    self._links.append(prog.attach())
            self._ncpus = libbpf.num_possible_cpus()
        except libbpf.BPFError as e:
            self.close()
            excerpt = libbpf.log_excerpt(e.log)
            detail = f"\n{excerpt}" if excerpt else ""
            raise SensorError(f"{e.strerror}{detail}", errno=e.errno) from e

    @property
    def attached(self) -> list[str]:
        return [link.name for link in self._links]

    @property
    def ring_fd(self) -> int:
        assert self._obj is not None
        return self._obj.map("kt_events").fd

    def tick(self) -> None:
        """Housekeeping, about once a second: watched files get new inodes
        when rewritten (/etc/shadow), so the watch list is looked up again."""
        if self.watch is not None:
            self.watch.refresh()

    def kernel_stats(self) -> KernelStats:
        assert self._obj is not None
        raw = self._obj.map("kt_stats").lookup_percpu(0, self._ncpus)
        slot = (STATS.itemsize + 7) & ~7
        arr = np.frombuffer(raw, dtype=np.dtype({"names": ["s"], "formats": [STATS],
                                                 "itemsize": slot}))["s"]
        return KernelStats(
            seq=arr["seq"].copy(),
            dropped=arr["dropped"].copy(),
            forced_wakeups=int(arr["forced_wakeups"].sum()),
        )

    def describe(self) -> dict[str, str]:
        """Event type -> the hooks it uses, for reports."""
        return {
            name: " + ".join(f"{h.mechanism}:{h.target}" for h in hooks)
            for name, hooks in self.plan.hooks.items()
        }

    def close(self) -> None:
        # Each detach waits for an RCU grace period in the kernel; done one
        # after another, 50 syscall tracepoints take seconds to let go. The
        # waits overlap when the calls run in threads (ctypes drops the GIL).
        if self._links:
            with ThreadPoolExecutor(max_workers=min(32, len(self._links))) as pool:
                list(pool.map(libbpf.Link.destroy, self._links))
        self._links.clear()
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Sensor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
