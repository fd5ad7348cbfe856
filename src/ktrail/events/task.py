"""Process and privilege events: sessions, renames, signals, ptrace, fileless
execution, executable memory, id and capability changes, and privilege
escalation seen in the kernel (bpf/task.bpf.c)."""

from __future__ import annotations

from typing import Any

from ktrail.events.model import Decoding, Event, EventKind, Field, Objects, text_slot
from ktrail.events.values import (
    MAP,
    MFD,
    PROT,
    PTRACE_REQUESTS,
    bits,
    caps,
    signal_name,
    signed64,
    unset_id,
)


def setsid(args: list[int], strs: list[Any]) -> Objects:
    return {"setsid": {}}


def prctl(args: list[int], strs: list[Any]) -> Objects:
    return {"prctl": {"option": "PR_SET_NAME", "name": text_slot(strs[0]),
                      "old_name": text_slot(strs[1])}}


def kill(args: list[int], strs: list[Any]) -> Objects:
    sig = args[1]
    return {"kill": {"signal": signal_name(sig), "signo": sig,
                     "target": {"pid": signed64(args[0]) or None, "tid": args[2] or None}}}


def ptrace(args: list[int], strs: list[Any]) -> Objects:
    req = args[0]
    return {"ptrace": {"request": PTRACE_REQUESTS.get(req, str(req)), "request_num": req,
                       "target": {"pid": signed64(args[1])}, "addr": args[2], "data": args[3]}}


def memfd(args: list[int], strs: list[Any]) -> Objects:
    return {"memfd": {"name": text_slot(strs[0]), "flags": bits(args[0], MFD)}}


def process_vm(args: list[int], strs: list[Any]) -> Objects:
    return {"process_vm": {"target": {"pid": signed64(args[0])}, "local_iovcnt": args[1],
                           "remote_iovcnt": args[2], "len": args[3], "flags": args[4],
                           "addr": args[5]}}


def exec_memory(args: list[int], strs: list[Any]) -> Objects:
    anon = bool(args[3] & 0x20)
    return {"memory": {"addr": args[0], "len": args[1], "prot": bits(args[2], PROT),
                       "flags": bits(args[3], MAP), "anonymous": anon}}


def setuid(args: list[int], strs: list[Any]) -> Objects:
    return {"setuid": {"asked": {"real": unset_id(args[0]), "effective": unset_id(args[1]),
                                 "saved": unset_id(args[2])},
                       "now": {"real": args[3], "effective": args[4], "saved": args[5]}}}


def capset(args: list[int], strs: list[Any]) -> Objects:
    return {"setuid": {"caps": {"effective": caps(args[0]), "permitted": caps(args[1]),
                                "inheritable": caps(args[2])}}}


def escalation(args: list[int], strs: list[Any]) -> Objects:
    return {"privilege_escalation": {"euid_before": args[0], "uid": args[1], "euid": args[2],
                                     "suid": args[3]}}


def _target(obj: dict[str, Any]) -> str:
    t = obj.get("target") or {}
    name = t.get("comm") or t.get("exe")
    return f"{t.get('pid')}" + (f" ({name})" if name else "")


def _setuid_summary(e: Event) -> str:
    s = e["setuid"]
    if "caps" in s:
        return "caps effective=" + (",".join(s["caps"].get("effective") or []) or "none")
    asked = s.get("asked") or {}
    now = s.get("now") or {}
    want = "/".join("-" if asked.get(k) is None else str(asked[k])
                    for k in ("real", "effective", "saved"))
    return f"{want} -> {now.get('real')}/{now.get('effective')}/{now.get('saved')}"


def _process_vm_summary(e: Event) -> str:
    op = "write" if e["evt"].get("syscall") == "process_vm_writev" else "read"
    return f"{op} {e['process_vm'].get('len')} bytes of {_target(e['process_vm'])}"


def _memory_summary(e: Event) -> str:
    m = e["memory"]
    return f"{'|'.join(m.get('prot') or [])} {m.get('len')} bytes at {m.get('addr'):#x}" \
        if isinstance(m.get("addr"), int) else "|".join(m.get("prot") or [])


KINDS = (
    EventKind("setsid", 26, "task", "a new session (daemonising, detaching from a terminal)",
              syscalls=("setsid",), decoding=Decoding("setsid", build=setsid),
              summary=lambda e: f"session {e['evt'].get('retval')}"),
    EventKind("prctl", 27, "task", "process renamed with PR_SET_NAME",
              syscalls=("prctl",), decoding=Decoding("prctl", build=prctl),
              fields=(Field("prctl.option", "string", "`PR_SET_NAME`"),
                      Field("prctl.name", "string", "the new name"),
                      Field("prctl.old_name", "string", "the name before")),
              summary=lambda e: f"{e['prctl'].get('old_name')} -> {e['prctl'].get('name')}"),
    EventKind("kill", 28, "task", "a signal sent (kill, tkill, tgkill)",
              syscalls=("kill", "tkill", "tgkill"), default=False,
              decoding=Decoding("kill", build=kill),
              fields=(Field("kill.signal", "string", "the signal's name (`SIGKILL`...)"),
                      Field("kill.signo", "int", "the signal's number"),
                      Field("kill.target.pid", "int or null", "the target process"),
                      Field("kill.target.tid", "int or null", "the target thread (tkill, "
                            "tgkill)"),
                      Field("kill.target.exec_id", "string or null", "the target's identity, "
                            "from the process table"),
                      Field("kill.target.exe", "string or null", "the target's program"),
                      Field("kill.target.comm", "string or null", "the target's comm"),
                      Field("kill.target.is_ktrail", "bool", "the target is this ktrail "
                            "sensor or its `ktrail-store` process (tamper)")),
              summary=lambda e: f"{e['kill'].get('signal')} -> {_target(e['kill'])}"),
    EventKind("ptrace", 29, "task", "ptrace: attach, seize and memory writes (every request "
              "in the full profile)",
              syscalls=("ptrace",), decoding=Decoding("ptrace", build=ptrace),
              fields=(Field("ptrace.request", "string", "`PTRACE_ATTACH`..."),
                      Field("ptrace.request_num", "int", "the request's number"),
                      Field("ptrace.target.pid", "int", "the traced process"),
                      Field("ptrace.target.exec_id", "string or null", "its identity"),
                      Field("ptrace.target.exe", "string or null", "its program"),
                      Field("ptrace.target.comm", "string or null", "its comm"),
                      Field("ptrace.target.is_ktrail", "bool", "the target is this ktrail "
                            "sensor or its `ktrail-store` process (tamper)"),
                      Field("ptrace.addr", "int", "the request's address argument"),
                      Field("ptrace.data", "int", "the request's data argument")),
              summary=lambda e: f"{e['ptrace'].get('request')} {_target(e['ptrace'])}"),
    EventKind("memfd_create", 30, "task", "an anonymous in-memory file (fileless execution)",
              syscalls=("memfd_create",), decoding=Decoding("memfd", build=memfd),
              fields=(Field("memfd.name", "string", "the name given (shown as `/memfd:NAME`)"),
                      Field("memfd.flags", "list of strings", "`MFD_*` flags")),
              summary=lambda e: str(e["memfd"].get("name"))),
    EventKind("exec_memory", 31, "task", "executable memory mapped anonymously or made "
              "executable (mmap, mprotect)",
              syscalls=("mmap", "mprotect"), default=False,
              decoding=Decoding("memory", build=exec_memory),
              fields=(Field("memory.addr", "int", "start address"),
                      Field("memory.len", "int", "length in bytes"),
                      Field("memory.prot", "list of strings", "`PROT_*` asked for"),
                      Field("memory.flags", "list of strings", "`MAP_*` flags (mmap)"),
                      Field("memory.anonymous", "bool", "not backed by a file")),
              summary=_memory_summary),
    EventKind("setuid", 32, "task", "uid/gid changes (setuid, setreuid, setresuid, setfsuid "
              "and the gid calls) and capset",
              syscalls=("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
                        "setfsuid", "setfsgid", "capset"),
              decoding=Decoding("setuid", build=setuid, by_syscall={"capset": capset}),
              fields=(Field("setuid.asked.real", "int or null", "real id asked for (null: "
                            "unchanged); gids for the gid calls"),
                      Field("setuid.asked.effective", "int or null", "effective id asked for"),
                      Field("setuid.asked.saved", "int or null", "saved id asked for"),
                      Field("setuid.now.real", "int", "real id after the call"),
                      Field("setuid.now.effective", "int", "effective id after the call"),
                      Field("setuid.now.saved", "int", "saved id after the call"),
                      Field("setuid.caps.effective", "list of strings", "`capset`: effective "
                            "capabilities asked for (`CAP_*`)"),
                      Field("setuid.caps.permitted", "list of strings", "`capset`: permitted "
                            "capabilities"),
                      Field("setuid.caps.inheritable", "list of strings", "`capset`: "
                            "inheritable capabilities")),
              summary=_setuid_summary),
    EventKind("privilege_escalation", 33, "task", "a traced syscall returned with euid 0 to a "
              "caller that entered with another euid",
              # Checked at the exit of every traced syscall; these make sure the
              # calls that legitimately change credentials are traced too.
              syscalls=("setuid", "setreuid", "setresuid", "setfsuid", "capset"),
              decoding=Decoding("privilege_escalation", build=escalation),
              fields=(Field("privilege_escalation.euid_before", "int", "euid at syscall entry"),
                      Field("privilege_escalation.uid", "int", "uid at exit"),
                      Field("privilege_escalation.euid", "int", "euid at exit (0)"),
                      Field("privilege_escalation.suid", "int", "saved uid at exit")),
              summary=lambda e: (f"euid {e['privilege_escalation'].get('euid_before')} -> "
                                 f"{e['privilege_escalation'].get('euid')} in "
                                 f"{e['evt'].get('syscall')}"),
              falco=()),
    EventKind("process_vm", 42, "task", "another process's memory read or written with "
              "process_vm_readv or process_vm_writev",
              syscalls=("process_vm_readv", "process_vm_writev"),
              decoding=Decoding("process_vm", build=process_vm),
              fields=(Field("process_vm.target.pid", "int", "the process whose memory it is, "
                            "as the caller named it"),
                      Field("process_vm.target.exec_id", "string or null", "its identity, "
                            "from the process table"),
                      Field("process_vm.target.exe", "string or null", "its program"),
                      Field("process_vm.target.comm", "string or null", "its comm"),
                      Field("process_vm.local_iovcnt", "int", "buffers in the caller"),
                      Field("process_vm.remote_iovcnt", "int", "ranges in the target"),
                      Field("process_vm.len", "int", "bytes asked for in the target's first "
                            "4 ranges (`evt.retval`: bytes moved)"),
                      Field("process_vm.addr", "int", "start of the target's first range"),
                      Field("process_vm.flags", "int", "the flags argument (0)")),
              summary=_process_vm_summary),
)
