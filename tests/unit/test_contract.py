"""The kernel/userspace contract: Python's dtypes against the compiled object's BTF.

Reads the shipped object (no root needed); bpftool dumps its BTF as JSON.
Any drift in a size, an offset, a field name or an enum value fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from ktrail.bpf import object_path
from ktrail.decode import schema
from ktrail.events.model import StrKind, SysFlags
from ktrail.events.registry import EventType, Syscall


@pytest.fixture(scope="module")
def btf() -> dict[str, Any]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run(
        [bpftool, "-j", "btf", "dump", "file", object_path("ktrail")],
        check=True, capture_output=True, text=True,
    ).stdout
    types = json.loads(out)["types"]
    return {"by_id": {t["id"]: t for t in types},
            "by_name": {(t["kind"], t.get("name")): t for t in types}}


def _resolve(btf: dict[str, Any], type_id: int) -> dict[str, Any]:
    t = btf["by_id"][type_id]
    while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT"):
        t = btf["by_id"][t["type_id"]]
    return t


def _size(btf: dict[str, Any], type_id: int) -> int:
    t = _resolve(btf, type_id)
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * _size(btf, t["type_id"])
    return t["size"]


def _flatten(btf: dict[str, Any], struct: dict[str, Any], base: int = 0) -> dict[str, tuple]:
    """C member name -> (byte offset, size); nested structs are expanded in place."""
    out: dict[str, tuple] = {}
    for m in struct["members"]:
        off = base + m["bits_offset"] // 8
        t = _resolve(btf, m["type_id"])
        if t["kind"] == "STRUCT":
            out.update(_flatten(btf, t, off))
        else:
            out[m["name"]] = (off, _size(btf, m["type_id"]))
    return out


def _dtype_fields(dtype: np.dtype) -> dict[str, tuple]:
    out = {}
    for name in dtype.names:
        sub, off = dtype.fields[name][:2]
        out[schema.C_FIELD_NAMES.get(name, name)] = (off, sub.itemsize)
    return out


@pytest.mark.parametrize("etype", list(schema.RECORDS))
def test_record_layout_matches_btf(btf: dict[str, Any], etype: EventType) -> None:
    dtype, cname = schema.RECORDS[etype]
    struct = btf["by_name"][("STRUCT", cname)]
    c_fields = _flatten(btf, struct)
    data = c_fields.pop("data", None)
    variable = {"kt_exec_event": schema.EXEC_DATA_MAX, "kt_sys_event": schema.SYS_DATA_MAX}
    if cname in variable:
        # The fixed part ends where the variable data starts.
        assert data == (dtype.itemsize, variable[cname])
        assert struct["size"] == dtype.itemsize + variable[cname]
    else:
        assert data is None
        assert struct["size"] == dtype.itemsize
    assert _dtype_fields(dtype) == c_fields


def test_header_matches_btf(btf: dict[str, Any]) -> None:
    struct = btf["by_name"][("STRUCT", "kt_event_header")]
    assert struct["size"] == schema.HEADER.itemsize
    assert _dtype_fields(schema.HEADER) == _flatten(btf, struct)
    assert _flatten(btf, struct)["comm"][1] == schema.COMM_LEN


def test_stats_matches_btf(btf: dict[str, Any]) -> None:
    struct = btf["by_name"][("STRUCT", "kt_stats")]
    assert struct["size"] == schema.STATS.itemsize
    assert _dtype_fields(schema.STATS) == _flatten(btf, struct)


@pytest.mark.parametrize(
    ("cenum", "pyenum", "prefix"),
    [
        ("kt_event_type", EventType, "KT_EVENT_"),
        ("kt_exec_flags", schema.ExecFlags, "KT_EXEC_"),
        ("kt_fork_flags", schema.ForkFlags, "KT_FORK_"),
        ("kt_str_kind", StrKind, "KT_STR_"),
        ("kt_sys_flags", SysFlags, "KT_SYS_"),
        ("kt_syscall", Syscall, "KT_SC_"),
    ],
)
def test_enums_match_btf(btf: dict[str, Any], cenum: str, pyenum: Any, prefix: str) -> None:
    values = {v["name"].removeprefix(prefix): v["val"]
              for v in btf["by_name"][("ENUM", cenum)]["values"]}
    assert values == {m.name: int(m.value) for m in pyenum}


def test_sock_tuple_matches_btf(btf: dict[str, Any]) -> None:
    from ktrail.events import values as sockets

    struct = btf["by_name"][("STRUCT", "kt_sock_tuple")]
    assert struct["size"] == sockets.SOCK_TUPLE.itemsize == sockets._TUPLE.size
    assert _dtype_fields(sockets.SOCK_TUPLE) == _flatten(btf, struct)
