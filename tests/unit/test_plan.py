"""Hook choice per event type, against kernels described by their features."""

from ktrail.loader.libbpf import log_excerpt
from ktrail.loader.sensor import make_plan

ALL = {"tracepoint", "raw_tp", "tp_btf", "netlink"}


def plan(events, mechanisms=ALL, tracepoints=(), syscalls=lambda sc: True):
    return make_plan(frozenset(events), has=lambda m: m in mechanisms,
                     has_syscall=syscalls, has_tracepoint=lambda tp: tp in tracepoints)


def test_io_uring_uses_the_name_this_kernel_has():
    new = plan({"io_uring"}, tracepoints={"io_uring/io_uring_submit_req"})
    assert new.hooks["io_uring"][0].programs == ("kt_uring_submit",)
    old = plan({"io_uring"}, tracepoints={"io_uring/io_uring_submit_sqe"})  # Linux 6.1
    assert old.hooks["io_uring"][0].programs == ("kt_uring_submit_sqe",)
    assert "no tracepoint io_uring/io_uring_submit_req" in old.skipped["io_uring"][0]


def test_a_kernel_without_io_uring_leaves_the_type_out_and_says_why():
    p = plan({"io_uring", "exec"})
    assert "io_uring" not in p.hooks and not p.missing
    assert "io_uring_submit_sqe" in p.unavailable["io_uring"]


def test_a_missing_mechanism_is_an_error_not_a_silent_gap():
    p = plan({"io_uring"}, mechanisms={"tracepoint"},
             tracepoints={"io_uring/io_uring_submit_req"})
    assert "tp_btf unavailable" in p.missing["io_uring"]


def test_lifecycle_falls_back_to_raw_tp():
    p = plan({"exec"}, mechanisms={"tracepoint", "raw_tp"})
    assert [h.mechanism for h in p.hooks["exec"]] == ["raw_tp", "tracepoint"]


def test_syscall_without_tracepoint_is_reported():
    p = plan({"chmod"}, syscalls=lambda sc: sc != "fchmodat2")
    assert "fchmodat2" not in p.hooks["chmod"][0].target
    assert "no tracepoint for fchmodat2" in p.skipped["chmod"][0]


def test_log_excerpt_keeps_the_failure_not_the_relocation_chatter():
    log = "".join(f"libbpf: prog 'p{i}': insn #{i} relocated\n" for i in range(500))
    log += ("libbpf: prog 'x': failed to find kernel BTF type ID of 'foo': -3\n"
            "libbpf: prog 'x': -- BEGIN PROG LOAD LOG --\n"
            + "".join(f"{i}: r1 = r2\n" for i in range(100))
            + "R1 invalid mem access 'scalar'\n"
            "libbpf: prog 'x': -- END PROG LOAD LOG --\n")
    text = log_excerpt(log)
    assert "relocated" not in text
    assert text.splitlines()[0].endswith("'foo': -3")
    assert "R1 invalid mem access" in text and "lines left out" in text
    assert len(text.splitlines()) <= 41


def test_syscalls_use_fentry_where_the_kernel_allows():
    p = make_plan(frozenset({"rename", "exec"}), has=lambda m: m in ALL | {"fentry"},
                  has_syscall=lambda sc: True, has_tracepoint=lambda tp: True,
                  has_function=lambda sc: sc != "renameat2")
    fentry, tracepoint = p.hooks["rename"]
    assert fentry.mechanism == "fentry"
    assert fentry.programs == ("kt_fentry_rename", "kt_fexit_rename",
                               "kt_fentry_renameat", "kt_fexit_renameat")
    assert tracepoint.mechanism == "tracepoint"
    assert tracepoint.programs == ("kt_enter_renameat2", "kt_exit_renameat2")
    # exec: the lifecycle hook plus its syscalls, for failed attempts
    assert [h.mechanism for h in p.hooks["exec"]] == ["tp_btf", "fentry"]
    assert p.hooks["exec"][1].programs == ("kt_fentry_execve", "kt_fexit_execve",
                                           "kt_fentry_execveat", "kt_fexit_execveat")


def test_tracepoint_only_when_asked():
    p = make_plan(frozenset({"rename"}), has=lambda m: m in ALL | {"fentry"},
                  has_syscall=lambda sc: True, has_function=lambda sc: True,
                  syscall_hooks="tracepoint")
    assert [h.mechanism for h in p.hooks["rename"]] == ["tracepoint"]


def test_failed_execs_unhooked_are_a_note_not_an_error():
    p = plan({"exec"}, syscalls=lambda sc: False)
    assert [h.mechanism for h in p.hooks["exec"]] == ["tp_btf"]
    assert any("failed attempts are not seen" in n for n in p.skipped["exec"])
