"""events/model.py: string slots, path resolution and argument decoding."""

from __future__ import annotations

from ktrail.events import model as syscalls
from ktrail.events.model import StrKind, SysFlags
from ktrail.events.registry import BY_NAME
from ktrail.events.values import open_flags


def test_kernel_path_components_are_reversed() -> None:
    tail = b"file\0dir\0tmp\0"
    [path] = syscalls.slots(tail, [len(tail)], [StrKind.DPATH], SysFlags.PATH_ROOTED)
    assert path == "/tmp/dir/file"


def test_root_is_an_empty_rooted_path() -> None:
    assert syscalls.slots(b"", [0], [StrKind.DPATH], SysFlags.PATH_ROOTED) == ["/"]


def test_walk_that_did_not_reach_the_root_is_marked() -> None:
    tail = b"c\0b\0"
    [path] = syscalls.slots(tail, [len(tail)], [StrKind.DPATH], 0)
    assert path == ".../b/c"


def test_slots_follow_each_other() -> None:
    tail = b"rel/x\0" + b"cwd\0home\0" + b"\x02\x00\x1f\x90"
    lens = [6, 9, 4, 0]
    kinds = [StrKind.USER, StrKind.DPATH, StrKind.BYTES, StrKind.NONE]
    flags = SysFlags.PATH_ROOTED << 1
    assert syscalls.slots(tail, lens, kinds, flags) == [
        "rel/x", "/home/cwd", b"\x02\x00\x1f\x90", None]


def test_resolve() -> None:
    assert syscalls.resolve("a/b", "/tmp") == "/tmp/a/b"
    assert syscalls.resolve("/etc/passwd", "/tmp") == "/etc/passwd"
    assert syscalls.resolve("../x", "/tmp/d") == "/tmp/d/../x"  # never normalised
    assert syscalls.resolve("rel", None) == "rel"
    assert syscalls.resolve(None, None) is None


def test_fields_for_rename_and_utimes() -> None:
    rename = BY_NAME["rename"].decoding
    strs = ["a", "/tmp", "b", "/tmp"]
    assert syscalls.decode_fields(rename, [(-100) & (2**64 - 1), 0, 1, 0, 0, 0], strs, 0) == {
        "path": "/tmp/a", "new_path": "/tmp/b", "flags": 1}
    utimes = BY_NAME["utimes"].decoding
    now = syscalls.UTIME_NOW
    out = syscalls.decode_fields(utimes, [0, 5, 7, 0, now, 0], ["/f", None, None, None], 0)
    assert out == {"path": "/f", "atime": 5_000_000_007, "mtime": "now"}
    omit = syscalls.decode_fields(utimes, [0, 0, syscalls.UTIME_OMIT, 1, 0, 0], ["/f", None], 0)
    assert omit["atime"] is None and omit["mtime"] == 1_000_000_000


def test_truncated_path_is_flagged() -> None:
    spec = BY_NAME["unlink"].decoding
    out = syscalls.decode_fields(spec, [0] * 6, ["x" * 10, "/d"], SysFlags.TRUNCATED << 0)
    assert out["path_truncated"] is True


def test_open_flags_and_mode() -> None:
    assert open_flags(0) == ["O_RDONLY"]
    assert open_flags(0o1 | 0o100 | 0o1000) == ["O_WRONLY", "O_CREAT", "O_TRUNC"]
    spec = BY_NAME["chmod"].decoding
    out = syscalls.decode_fields(spec, [0, 0o104755, 0, 0, 0, 0], ["/bin/x", None], 0)
    assert out["mode"] == "4755"


def test_every_syscall_record_type_has_a_decoding() -> None:
    from ktrail.decode.schema import SYSCALL_TYPES
    from ktrail.events.registry import KINDS

    assert {int(t) for t in SYSCALL_TYPES} == {k.id for k in KINDS if k.decoding is not None}
