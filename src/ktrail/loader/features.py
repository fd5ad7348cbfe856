"""What this kernel can do, found by trying it.

Each hook mechanism is probed by loading *and attaching* a tiny program from
probes.bpf.o: a program type can load on a kernel where attaching it fails
(kprobes without CONFIG_KPROBES), so only both together mean "available".
Results are cached per process; each answer is yes, or no with the reason.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from ktrail.bpf import object_path
from ktrail.events.registry import Syscall
from ktrail.loader import libbpf

MECHANISMS = ("tracepoint", "raw_tp", "tp_btf", "kprobe", "fentry", "lsm", "uprobe", "ringbuf",
              "netlink")

_PROBE_PROGRAM = {
    "tracepoint": "probe_tracepoint",
    "raw_tp": "probe_raw_tp",
    "tp_btf": "probe_tp_btf",
    "kprobe": "probe_kprobe",
    "fentry": "probe_fentry",
    "lsm": "probe_lsm",
    "uprobe": "probe_uprobe",
}

# Capability bits (linux/capability.h) that can stand in for root.
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str = ""


def _libc_path() -> str | None:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip().split(" ", 5)[-1].strip()
                if "/libc.so" in path or "/libc-" in path:
                    return path
    except OSError:
        pass
    return None


def _try_program(mechanism: str) -> Probe:
    prog_name = _PROBE_PROGRAM[mechanism]
    try:
        with libbpf.Object(object_path("probes")) as obj:
            for p in obj.programs():
                p.set_autoload(p.name == prog_name)
            try:
                obj.load()
            except libbpf.BPFError as e:
                return Probe(mechanism, False, f"load failed: {e.strerror}")
            prog = obj.program(prog_name)
            try:
                if mechanism == "uprobe":
                    libc = _libc_path()
                    if libc is None:
                        return Probe(mechanism, False, "no libc mapped to attach to")
                    link = prog.attach_uprobe(libc, "getpid", pid=os.getpid())
                else:
                    link = prog.attach()
            except libbpf.BPFError as e:
                return Probe(mechanism, False, f"attach failed: {e.strerror}")
            link.destroy()
            return Probe(mechanism, True, prog.section)
    except libbpf.BPFError as e:
        return Probe(mechanism, False, f"{e.what}: {e.strerror}")


@functools.cache
def probe(mechanism: str) -> Probe:
    if mechanism == "netlink":
        try:
            socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15).close()
        except OSError as e:
            return Probe("netlink", False, f"uevent socket: {e.strerror}")
        return Probe("netlink", True, "NETLINK_KOBJECT_UEVENT")
    if mechanism == "ringbuf":
        ok = libbpf.probe_map_type(libbpf.BPF_MAP_TYPE_RINGBUF)
        return Probe("ringbuf", ok, "BPF_MAP_TYPE_RINGBUF" if ok else "map type not supported")
    if mechanism == "tracepoint":
        ensure_tracefs()
    result = _try_program(mechanism)
    kprobe_events = os.path.join(TRACEFS, "kprobe_events")
    if (
        mechanism == "kprobe"
        and not result.ok
        and ensure_tracefs().startswith("mounted")
        and not os.path.exists(kprobe_events)
    ):
        return Probe("kprobe", False, f"kernel built without CONFIG_KPROBES; {result.detail}")
    if mechanism == "lsm" and not result.ok:
        ensure_securityfs()
        active = read_text(SECURITYFS + "/lsm")
        if active is not None and "bpf" not in active.split(","):
            return Probe("lsm", False, f"'bpf' not in active LSMs ({active}); {result.detail}")
    return result


def has(mechanism: str) -> bool:
    return probe(mechanism).ok


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def lockdown_mode() -> str | None:
    """The active lockdown mode ('none', 'integrity', 'confidentiality'), or None."""
    if os.geteuid() == 0:
        ensure_securityfs()
    text = read_text(SECURITYFS + "/lockdown")
    if not text:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return None


def effective_caps() -> int:
    for line in (read_text("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def kernel_release() -> str:
    return platform.release()


TRACEFS = "/sys/kernel/tracing"
SECURITYFS = "/sys/kernel/security"


@functools.cache
def _ensure_mounted(path: str, fstype: str, marker: str) -> str:
    if os.path.exists(os.path.join(path, marker)):
        return f"mounted at {path}"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", path.encode(), fstype.encode(), 0, None) == 0:
        return f"mounted by ktrail at {path}"
    return f"not mounted, and mounting failed: {os.strerror(ctypes.get_errno())}"


def ensure_tracefs() -> str:
    """Mounts tracefs if nothing has; per-syscall tracepoints need it."""
    return _ensure_mounted(TRACEFS, "tracefs", "events")


def ensure_securityfs() -> str:
    """Mounts securityfs if nothing has; it tells the lockdown mode and active LSMs."""
    return _ensure_mounted(SECURITYFS, "securityfs", "lsm")


def has_syscall_tracepoint(name: str) -> bool:
    """Whether syscalls:sys_enter_<name> exists (syscalls differ by arch and version)."""
    ensure_tracefs()
    return os.path.isdir(os.path.join(TRACEFS, "events", "syscalls", f"sys_enter_{name}"))


def has_tracepoint(name: str) -> bool:
    """Whether the tracepoint "category/name" exists on this kernel."""
    ensure_tracefs()
    return os.path.isdir(os.path.join(TRACEFS, "events", name))


# Syscall entry functions, the fentry/fexit targets (bpf/common.bpf.h KT_SYS_FN).
SYSCALL_FUNCTION_PREFIX = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}


@functools.cache
def syscall_functions() -> dict[str, str]:
    """Syscall name -> the kernel function fentry/fexit attach to, for the
    syscalls whose function the kernel's BTF describes. A syscall without
    arguments has an entry function that is an alias of __do_sys_X, and
    BTF only names the latter."""
    prefix = SYSCALL_FUNCTION_PREFIX.get(platform.machine())
    if prefix is None or not has_btf():
        return {}
    syscalls = (*Syscall.__members__, "execve", "execveat")
    candidates = {sc: (prefix + sc, "__do_sys_" + sc) for sc in syscalls}
    try:
        found = libbpf.kernel_functions([f for fs in candidates.values() for f in fs])
    except libbpf.BPFError:
        return {}
    return {sc: next(f for f in fs if f in found)
            for sc, fs in candidates.items() if found.intersection(fs)}


def has_syscall_function(name: str) -> bool:
    """Whether fentry/fexit can attach to syscall <name>'s entry function."""
    return name in syscall_functions()


def has_btf() -> bool:
    return os.path.exists("/sys/kernel/btf/vmlinux")


def preflight() -> list[str]:
    """Reasons the sensor cannot run here; empty when it can."""
    problems: list[str] = []
    # Capabilities, not the uid, decide: uid 0 in a locked-down container may
    # hold none, and an unprivileged uid may hold CAP_BPF + CAP_PERFMON.
    caps = effective_caps()
    privileged = caps & (1 << CAP_SYS_ADMIN) or (
        caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)
    )
    if not privileged:
        who = "root without capabilities" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        problems.append(
            f"ktrail needs root with CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON, to load BPF "
            f"programs; it runs as {who}. Run it with sudo"
        )
        return problems  # every other check needs privileges to be meaningful
    if not has_btf():
        problems.append(
            "kernel BTF is missing (/sys/kernel/btf/vmlinux); ktrail needs a kernel built "
            "with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, RHEL and Fedora kernels have it)"
        )
    if lockdown_mode() == "confidentiality":
        problems.append(
            "kernel lockdown is in 'confidentiality' mode, which forbids BPF from reading "
            "kernel memory; ktrail cannot trace under it (boot with lockdown=integrity or none)"
        )
    try:
        if not has("ringbuf"):
            problems.append("the BPF ring buffer is not supported (needs Linux 5.8 or later)")
    except libbpf.LibbpfMissing as e:
        problems.append(f"{e}; install it with 'apt-get install libbpf1'")
    return problems
