from __future__ import annotations

import pytest
from fakeproc import FakeProc

from ktrail.process import (
    Process,
    ProcessTable,
    ProcFS,
    UserNames,
    make_exec_id,
    parse_exec_id,
)

CID = "3f4a9c2b1e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
NAMES = {0: "root", 1000: "alice"}
S = 1_000_000_000  # one second in ns


class CountingLookup:
    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.calls: list[int] = []

    def __call__(self, uid: int) -> str | None:
        self.calls.append(uid)
        return self.names.get(uid)


def make_table(fake: FakeProc, **kw: int) -> ProcessTable:
    return ProcessTable(ProcFS(fake.path), UserNames(lookup=CountingLookup(NAMES)), **kw)


def basic_tree(fake: FakeProc) -> None:
    fake.add(
        1,
        comm="systemd",
        ppid=0,
        start_ticks=0,
        exe="/usr/lib/systemd/systemd",
        args=["/sbin/init"],
    )
    fake.add_kthread(2, "kthreadd", ppid=0, start_ticks=0)
    fake.add_kthread(3, "rcu_gp", start_ticks=1)
    fake.add(500, comm="sshd", ppid=1, start_ticks=300, exe="/usr/sbin/sshd")
    fake.add(
        600,
        comm="bash",
        ppid=500,
        start_ticks=400,
        exe="/usr/bin/bash",
        uid=1000,
        gid=1000,
        cwd="/home/alice",
    )
    # Same tick as its parent and a lower pid (pid wrap): must still come after bash.
    fake.add(
        90,
        comm="sleep",
        ppid=600,
        start_ticks=400,
        exe="/usr/bin/sleep",
        uid=1000,
        cgroup=f"0::/system.slice/docker-{CID}.scope\n",
    )


def exec_(
    table: ProcessTable,
    pid: int,
    start: int,
    ppid: int,
    exe: str = "/bin/true",
    ts: int = 0,
    cwd: str | None = None,
    container_id: str | None = None,
) -> Process:
    comm = exe.rsplit("/", 1)[-1]
    return table.on_exec(
        pid, start, ppid, 1000, 1000, comm, exe, [exe], False, ts, cwd, container_id
    )


# ---- exec ids ----------------------------------------------------------------------


def test_exec_id_roundtrip() -> None:
    assert make_exec_id(42, 1234) == "42:1234"
    assert parse_exec_id("42:1234") == (42, 1234)
    assert parse_exec_id("42") is None
    assert parse_exec_id("a:b") is None


# ---- seed --------------------------------------------------------------------------


def test_seed_parents_before_children_and_ancestors(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    assert t.seed() == 6
    sleep = t.get(90, 400)
    assert sleep is not None
    assert sleep.source == "procfs"
    assert sleep.start_ns is None
    assert sleep.parent_exec_id == "600:400"
    assert sleep.ancestors == ("600:400", "500:300", "1:0")
    assert sleep.user == "alice"
    assert sleep.container_id == CID
    bash = t.get(600, 400)
    assert bash is not None
    assert bash.cwd == "/home/alice"
    assert bash.container_id is None
    kt = t.get(3, 1)
    assert kt is not None
    assert kt.kernel_thread
    assert kt.parent_exec_id == "2:0"
    assert kt.ancestors == ("2:0",)
    init = t.get(1, 0)
    assert init is not None
    assert init.parent_exec_id is None
    assert init.ancestors == ()
    assert [p.comm if p else None for p in t.ancestry(sleep)] == ["bash", "sshd", "systemd"]
    assert t.stats()["seeded"] == 6
    # Seeding again creates nothing new.
    assert t.seed() == 0


def test_seed_ancestors_bounded(fake: FakeProc) -> None:
    fake.add(1, ppid=0, start_ticks=0)
    for pid in range(10, 30):
        fake.add(pid, ppid=pid - 1 if pid > 10 else 1, start_ticks=pid)
    t = make_table(fake, max_depth=4)
    t.seed()
    leaf = t.get(29, 29)
    assert leaf is not None
    assert leaf.ancestors == ("28:28", "27:27", "26:26", "25:25")


# ---- fork / exec -------------------------------------------------------------------


def test_fork_copies_parent(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    t.seed()
    child = t.on_fork(600, 400, 700, 450, ts_ns=5 * S)
    assert child.source == "fork"
    assert child.exec_id == "700:450"
    assert child.ppid == 600
    assert child.parent_exec_id == "600:400"
    assert child.ancestors == ("600:400", "500:300", "1:0")
    assert (child.exe, child.cwd, child.uid, child.user, child.comm) == (
        "/usr/bin/bash",
        "/home/alice",
        1000,
        "alice",
        "bash",
    )
    assert child.start_ns == 5 * S
    parent = t.get(600, 400)
    assert parent is not None
    # One list for both: an image's args are replaced by exec, never changed in place.
    assert child.args is parent.args


def test_fork_unknown_parent_read_from_procfs(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)  # not seeded: the parent chain comes from /proc lazily
    child = t.on_fork(600, 400, 701, 460, ts_ns=1)
    assert child.source == "fork"
    assert child.exe == "/usr/bin/bash"
    assert child.ancestors == ("600:400", "500:300", "1:0")
    assert t.get(500, 300) is not None
    assert t.stats()["procfs_lookups"] >= 1


def test_fork_unknown_parent_gone(fake: FakeProc) -> None:
    t = make_table(fake)
    child = t.on_fork(800, 900, 801, 950, ts_ns=1)
    assert child.source == "partial"
    assert child.parent_exec_id == "800:900"
    assert child.ancestors == ("800:900",)
    assert t.stats()["partial"] == 1


def test_fork_unknown_parent_wrong_start_ticks(fake: FakeProc) -> None:
    fake.add(800, start_ticks=5)  # a different process now holds pid 800
    t = make_table(fake)
    child = t.on_fork(800, 900, 801, 950, ts_ns=1)
    assert child.parent_exec_id == "800:900"
    assert t.get(800, 5) is None


def test_exec_updates_in_place(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    t.seed()
    t.on_fork(600, 400, 700, 450, ts_ns=5 * S)
    proc = t.on_exec(
        700,
        450,
        600,
        0,
        0,
        "ls",
        "/usr/bin/ls",
        ["ls", "-l"],
        True,
        6 * S,
        cwd="/tmp",
        container_id=None,
    )
    assert proc is t.get(700, 450)
    assert proc.exec_id == "700:450"
    assert proc.source == "exec"
    assert (proc.exe, proc.args, proc.args_truncated) == ("/usr/bin/ls", ["ls", "-l"], True)
    assert (proc.uid, proc.user, proc.cwd) == (0, "root", "/tmp")
    assert proc.start_ns == 5 * S  # exec does not change the start time
    assert proc.parent_exec_id == "600:400"
    assert len(t) == 7


def test_exec_relative_exe_joined_to_cwd(fake: FakeProc) -> None:
    t = make_table(fake)
    p = exec_(t, 10, 1, 0, exe="./build/tool", cwd="/src/proj")
    assert p.exe == "/src/proj/build/tool"
    p = exec_(t, 11, 1, 0, exe="tool", cwd="/opt")
    assert p.exe == "/opt/tool"
    p = exec_(t, 12, 1, 0, exe="../bin/x", cwd="/opt/a")
    assert p.exe == "/opt/bin/x"


def test_exec_cwd_and_container_from_procfs(fake: FakeProc) -> None:
    fake.add(
        20, ppid=1, start_ticks=7, cwd="/work", cgroup=f"0::/system.slice/docker-{CID}.scope\n"
    )
    t = make_table(fake)
    p = exec_(t, 20, 7, 1, exe="./run")
    assert p.cwd == "/work"
    assert p.exe == "/work/run"
    assert p.container_id == CID
    assert t.stats()["procfs_probes"] == 1


def test_exec_falls_back_to_existing_values_when_gone(fake: FakeProc) -> None:
    t = make_table(fake)
    exec_(t, 30, 7, 0, cwd="/data", container_id=CID)
    p = exec_(t, 30, 7, 0, exe="next")  # gone from /proc: keep what we had
    assert p.cwd == "/data"
    assert p.container_id == CID
    assert p.exe == "/data/next"


def test_exec_probe_ignores_reused_pid(fake: FakeProc) -> None:
    fake.add(31, start_ticks=99, cwd="/other", cgroup=f"0::/docker/{CID}\n")
    t = make_table(fake)
    p = exec_(t, 31, 7, 0)
    assert p.cwd == ""
    assert p.container_id is None


def test_exec_without_fork_resolves_parent_by_pid(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    t.seed()
    p = exec_(t, 710, 470, 600, cwd=None)
    assert p.parent_exec_id == "600:400"
    assert p.ancestors[0] == "600:400"
    assert p.cwd == "/home/alice"  # inherited: the process is not in /proc


def test_exec_without_fork_parent_from_procfs(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    p = exec_(t, 711, 470, 500)
    assert p.parent_exec_id == "500:300"
    assert p.ancestors == ("500:300", "1:0")


def test_kernel_thread_exec_becomes_user_process(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    t.seed()
    helper = t.on_fork(2, 0, 77, 900, ts_ns=1)
    assert helper.kernel_thread
    p = t.on_exec(
        77, 900, 2, 0, 0, "modprobe", "/sbin/modprobe", ["modprobe", "x"], False, 2, cwd="/"
    )
    assert not p.kernel_thread
    assert p.ancestors == ("2:0",)


# ---- exit / linger / reuse ---------------------------------------------------------


def test_exit_linger_and_expire(fake: FakeProc) -> None:
    t = make_table(fake, linger_ns=5 * S)
    parent = exec_(t, 40, 1, 0, cwd="/")
    exec_(t, 41, 2, 40, cwd="/")
    done = t.on_exit(40, 1, 3, ts_ns=10 * S)
    assert done is parent
    assert done.exit_code == 3
    assert done.exit_ns == 10 * S
    # Still resolvable for late events and for its children.
    assert t.get(40, 1) is parent
    assert t.get_by_pid(40) is None
    assert t.get_by_pid(40, include_exited=True) is parent
    late = t.resolve(40, 1, 0, 0, 0, "late")
    assert late is parent
    child = t.get(41, 2)
    assert child is not None
    assert t.ancestry(child) == [parent]
    assert t.expire(14 * S) == 0
    assert t.expire(16 * S) == 1
    assert t.get(40, 1) is None
    assert t.ancestry(child) == [None]
    assert t.on_exit(40, 1, 0, ts_ns=17 * S) is None
    assert t.stats()["size"] == 1


def test_duplicate_exit_keeps_first(fake: FakeProc) -> None:
    t = make_table(fake)
    exec_(t, 40, 1, 0, cwd="/")
    t.on_exit(40, 1, 3, ts_ns=10)
    p = t.on_exit(40, 1, 9, ts_ns=20)
    assert p is not None
    assert (p.exit_code, p.exit_ns) == (3, 10)


def test_pid_reuse_keeps_entries_separate(fake: FakeProc) -> None:
    t = make_table(fake)
    old = exec_(t, 50, 100, 0, exe="/bin/old", cwd="/")
    t.on_exit(50, 100, 0, ts_ns=1 * S)
    new = exec_(t, 50, 900, 0, exe="/bin/new", cwd="/")
    assert old is not new
    assert t.get(50, 100) is old
    assert old.exe == "/bin/old"
    assert old.exit_code == 0
    assert t.get(50, 900) is new
    assert new.exe == "/bin/new"
    assert new.exit_ns is None
    assert t.get_by_pid(50) is new
    assert t.get_by_exec_id("50:100") is old


def test_pid_reuse_without_seen_exit_retires_old(fake: FakeProc) -> None:
    t = make_table(fake, linger_ns=5 * S)
    old = exec_(t, 51, 100, 0, cwd="/", ts=1 * S)
    new = exec_(t, 51, 900, 0, cwd="/", ts=2 * S)
    assert t.get_by_pid(51) is new
    assert t.stats()["exited"] == 1
    assert t.get(51, 100) is old
    assert old.exit_ns is None
    t.expire(8 * S)
    assert t.get(51, 100) is None
    assert t.get(51, 900) is new


def test_late_event_for_older_pid_holder(fake: FakeProc) -> None:
    t = make_table(fake)
    new = exec_(t, 52, 900, 0, cwd="/")
    old = t.resolve(52, 100, 0, 0, 0, "old")
    assert old.source == "partial"
    assert t.get_by_pid(52) is new  # the older one must not take the pid over


def test_child_of_reused_pid_not_linked_to_newer_process(fake: FakeProc) -> None:
    t = make_table(fake)
    exec_(t, 60, 500, 0, cwd="/")
    # Event for a process started before the current holder of pid 60: 60 is not its parent.
    p = t.resolve(61, 400, 60, 0, 0, "x")
    assert p.parent_exec_id is None


def test_reparent_keeps_parent_exec_id(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    t.seed()
    child = t.on_fork(600, 400, 700, 450, ts_ns=1)
    t.on_exit(600, 400, 0, ts_ns=2)
    p = t.reparent(700, 450, 1)
    assert p is child
    assert child.ppid == 1
    assert child.parent_exec_id == "600:400"
    assert child.ancestors[0] == "600:400"
    assert t.reparent(9999, 1, 1) is None


# ---- resolve -----------------------------------------------------------------------


def test_resolve_from_procfs(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    p = t.resolve(90, 400, 600, 1000, 1000, "sleep")
    assert p.source == "procfs"
    assert p.exe == "/usr/bin/sleep"
    assert p.container_id == CID
    assert p.ancestors == ("600:400", "500:300", "1:0")
    assert t.resolve(90, 400, 600, 1000, 1000, "sleep") is p


def test_resolve_partial_fallback(fake: FakeProc) -> None:
    basic_tree(fake)
    t = make_table(fake)
    t.seed()
    p = t.resolve(4242, 480, 600, 1000, 1000, "gone")
    assert p.source == "partial"
    assert (p.comm, p.uid, p.gid, p.user, p.exe) == ("gone", 1000, 1000, "alice", "")
    assert p.parent_exec_id == "600:400"
    assert p.ancestors == ("600:400", "500:300", "1:0")
    # A later fork event fills in the image from the parent.
    f = t.on_fork(600, 400, 4242, 480, ts_ns=3)
    assert f is p
    assert p.source == "fork"
    assert p.exe == "/usr/bin/bash"
    assert p.start_ns == 3


def test_resolve_partial_no_parent(fake: FakeProc) -> None:
    t = make_table(fake)
    p = t.resolve(5, 5, 4, 12345, 12345, "x")
    assert p.source == "partial"
    assert p.parent_exec_id is None
    assert p.ancestors == ()
    assert p.user is None
    assert t.stats()["partial"] == 1


def test_resolve_ignores_procfs_with_other_start_ticks(fake: FakeProc) -> None:
    fake.add(70, start_ticks=1, exe="/bin/other")
    t = make_table(fake)
    p = t.resolve(70, 2, 0, 0, 0, "mine")
    assert p.source == "partial"
    assert p.exe == ""


# ---- bound -------------------------------------------------------------------------


def test_bound_evicts_exited_first(fake: FakeProc) -> None:
    t = make_table(fake, max_entries=3)
    a = exec_(t, 1, 1, 0, cwd="/")
    exec_(t, 2, 2, 0, cwd="/")
    exec_(t, 3, 3, 0, cwd="/")
    t.on_exit(2, 2, 0, ts_ns=5)
    exec_(t, 4, 4, 0, cwd="/")  # table full: the exited entry goes, not LRU live `a`
    assert t.get(2, 2) is None
    assert t.get(1, 1) is a
    st = t.stats()
    assert (st["size"], st["evictions"], st["evictions_live"]) == (3, 1, 0)
    # No exited entries left: the least recently used live entry goes.
    t.get(1, 1)  # touch: 3 is now the LRU
    exec_(t, 5, 5, 0, cwd="/")
    assert t.get(3, 3) is None
    assert t.get(1, 1) is a
    st = t.stats()
    assert (st["size"], st["evictions"], st["evictions_live"]) == (3, 2, 1)
    assert t.get_by_pid(3) is None


def test_bound_exited_oldest_exit_first(fake: FakeProc) -> None:
    t = make_table(fake, max_entries=3)
    for pid in (1, 2, 3):
        exec_(t, pid, pid, 0, cwd="/")
    t.on_exit(3, 3, 0, ts_ns=1)
    t.on_exit(1, 1, 0, ts_ns=2)
    exec_(t, 4, 4, 0, cwd="/")
    assert t.get(3, 3) is None
    assert t.get(1, 1) is not None


def test_invalid_bound(fake: FakeProc) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        make_table(fake, max_entries=0)


def test_stats_keys(fake: FakeProc) -> None:
    st = make_table(fake).stats()
    for k in (
        "size",
        "max_entries",
        "evictions",
        "evictions_live",
        "seeded",
        "partial",
        "procfs_lookups",
    ):
        assert k in st


# ---- user names --------------------------------------------------------------------


def test_user_names_negative_caching() -> None:
    lookup = CountingLookup(NAMES)
    users = UserNames(lookup=lookup)
    assert users.name(1000) == "alice"
    assert users.name(1000) == "alice"
    assert users.name(4321) is None
    assert users.name(4321) is None
    assert lookup.calls == [1000, 4321]
    assert users.misses == 2
    assert users.hits == 2


def test_user_names_negative_ttl() -> None:
    now = [0.0]
    lookup = CountingLookup({})
    users = UserNames(lookup=lookup, negative_ttl_s=10.0, clock=lambda: now[0])
    assert users.name(5) is None
    now[0] = 5.0
    assert users.name(5) is None
    assert lookup.calls == [5]
    lookup.names[5] = "late"  # user created after start-up
    now[0] = 11.0
    assert users.name(5) == "late"
    now[0] = 1e9
    assert users.name(5) == "late"  # positive entries do not expire
    assert lookup.calls == [5, 5]


def test_user_names_bound() -> None:
    lookup = CountingLookup(NAMES)
    users = UserNames(max_entries=2, lookup=lookup)
    users.name(0)
    users.name(1000)
    users.name(0)  # touch: 1000 is now least recently used
    users.name(7)
    assert len(users) == 2
    assert users.evictions == 1
    users.name(0)
    assert lookup.calls == [0, 1000, 7]
    users.name(1000)
    assert lookup.calls == [0, 1000, 7, 1000]
    assert users.evictions == 2


def test_user_names_default_lookup_handles_bad_uids() -> None:
    users = UserNames()
    assert users.name(-1) is None
    assert users.name(2**40) is None


def test_parent_lookup_skips_dead_namesake(fake: FakeProc) -> None:
    t = make_table(fake)
    exec_(t, 60, 100, 0, cwd="/")
    t.on_exit(60, 100, 0, ts_ns=1)
    # pid 60 was reused by a process we never saw an event for.
    fake.add(60, ppid=0, start_ticks=500, exe="/bin/newer")
    p = t.resolve(61, 600, 60, 0, 0, "child")
    assert p.parent_exec_id == "60:500"
    newer = t.get(60, 500)
    assert newer is not None
    assert newer.exe == "/bin/newer"
    assert t.get_by_pid(60) is newer


def test_parent_lookup_uses_exited_parent_when_still_in_proc(fake: FakeProc) -> None:
    t = make_table(fake)
    parent = exec_(t, 62, 100, 0, cwd="/")
    t.on_exit(62, 100, 0, ts_ns=1)
    fake.add(62, ppid=0, start_ticks=100, state="Z", exe=None, cmdline=b"")  # zombie
    p = t.resolve(63, 150, 62, 0, 0, "child")
    assert p.parent_exec_id == parent.exec_id


def test_exec_fills_missing_parent(fake: FakeProc) -> None:
    t = make_table(fake)
    p = t.resolve(64, 200, 1, 0, 0, "early")  # parent 1 not known yet
    assert p.parent_exec_id is None
    fake.add(1, ppid=0, start_ticks=0, exe="/sbin/init")
    q = exec_(t, 64, 200, 1, cwd="/")
    assert q is p
    assert p.parent_exec_id == "1:0"
    assert p.ancestors == ("1:0",)
