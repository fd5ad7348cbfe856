"""Thin ctypes binding to libbpf 1.x (Debian's libbpf1).

This is the only module that talks to libbpf. It exposes the few calls the
loader needs, turns libbpf's NULL/negative-errno returns into ``BPFError``
carrying libbpf's own log (verifier output included), and nothing more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable, Iterator

_c_void_p = ctypes.c_void_p
_c_char_p = ctypes.c_char_p
_c_int = ctypes.c_int

BPF_MAP_TYPE_RINGBUF = 27
BTF_KIND_FUNC = 12
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15


class BPFError(OSError):
    """A libbpf call failed. ``log`` holds what libbpf printed meanwhile."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log = log


def log_excerpt(log: str, limit: int = 40) -> str:
    """The part of libbpf's log that explains a failure.

    libbpf logs every relocation of every program at debug level; a load
    failure wants the verifier's report and libbpf's error lines only. Of a
    long verifier report the end matters (where it gave up).
    """
    keep: list[str] = []
    in_verifier = False
    for line in log.splitlines():
        if "BEGIN PROG LOAD LOG" in line:
            in_verifier = True
        if in_verifier or "fail" in line or "error" in line.lower():
            keep.append(line)
        if "END PROG LOAD LOG" in line:
            in_verifier = False
    if len(keep) > limit:
        keep = [*keep[:4], f"... ({len(keep) - limit + 4} lines left out)", *keep[-(limit - 4):]]
    return "\n".join(keep)


class LibbpfMissing(RuntimeError):
    pass


_PRINT_FN = ctypes.CFUNCTYPE(_c_int, _c_int, _c_char_p, _c_void_p)
_SAMPLE_FN = ctypes.CFUNCTYPE(_c_int, _c_void_p, _c_void_p, ctypes.c_size_t)


class _UprobeOpts(ctypes.Structure):
    # struct bpf_uprobe_opts as of libbpf 1.1; libbpf zero-fills past ``sz``.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", _c_char_p),
    ]


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


def _load_lib() -> ctypes.CDLL:
    for name in ("libbpf.so.1", ctypes.util.find_library("bpf")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise LibbpfMissing("libbpf.so.1 not found (Debian package libbpf1)")


_SIGS: dict[str, tuple[object, list[object]]] = {
    "libbpf_set_print": (_c_void_p, [_PRINT_FN]),
    "libbpf_num_possible_cpus": (_c_int, []),
    "libbpf_probe_bpf_map_type": (_c_int, [_c_int, _c_void_p]),
    "bpf_object__open_file": (_c_void_p, [_c_char_p, _c_void_p]),
    "bpf_object__load": (_c_int, [_c_void_p]),
    "bpf_object__close": (None, [_c_void_p]),
    "bpf_object__btf": (_c_void_p, [_c_void_p]),
    "bpf_object__next_program": (_c_void_p, [_c_void_p, _c_void_p]),
    "bpf_object__next_map": (_c_void_p, [_c_void_p, _c_void_p]),
    "bpf_object__find_map_by_name": (_c_void_p, [_c_void_p, _c_char_p]),
    "bpf_program__name": (_c_char_p, [_c_void_p]),
    "bpf_program__section_name": (_c_char_p, [_c_void_p]),
    "bpf_program__set_autoload": (_c_int, [_c_void_p, ctypes.c_bool]),
    "bpf_program__set_attach_target": (_c_int, [_c_void_p, _c_int, _c_char_p]),
    "bpf_program__attach": (_c_void_p, [_c_void_p]),
    "bpf_program__attach_uprobe_opts": (
        _c_void_p,
        [_c_void_p, _c_int, _c_char_p, ctypes.c_size_t, ctypes.POINTER(_UprobeOpts)],
    ),
    "bpf_link__destroy": (_c_int, [_c_void_p]),
    "bpf_map__name": (_c_char_p, [_c_void_p]),
    "bpf_map__fd": (_c_int, [_c_void_p]),
    "bpf_map__set_max_entries": (_c_int, [_c_void_p, ctypes.c_uint32]),
    "bpf_map__value_size": (ctypes.c_uint32, [_c_void_p]),
    "bpf_map__initial_value": (_c_void_p, [_c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_map_lookup_elem": (_c_int, [_c_int, _c_void_p, _c_void_p]),
    "bpf_map_update_elem": (_c_int, [_c_int, _c_void_p, _c_void_p, ctypes.c_uint64]),
    "bpf_map_delete_elem": (_c_int, [_c_int, _c_void_p]),
    "btf__find_by_name_kind": (ctypes.c_int32, [_c_void_p, _c_char_p, ctypes.c_uint32]),
    "btf__load_vmlinux_btf": (_c_void_p, []),
    "btf__free": (None, [_c_void_p]),
    "btf__type_by_id": (_c_void_p, [_c_void_p, ctypes.c_uint32]),
    "btf__name_by_offset": (_c_char_p, [_c_void_p, ctypes.c_uint32]),
    "ring_buffer__new": (_c_void_p, [_c_int, _SAMPLE_FN, _c_void_p, _c_void_p]),
    "ring_buffer__consume": (_c_int, [_c_void_p]),
    "ring_buffer__epoll_fd": (_c_int, [_c_void_p]),
    "ring_buffer__free": (None, [_c_void_p]),
}

_lib: ctypes.CDLL | None = None
_lock = threading.Lock()
_log: list[str] = []
_libc = ctypes.CDLL(None)
_libc.vsnprintf.argtypes = [_c_char_p, ctypes.c_size_t, _c_char_p, _c_void_p]


@_PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    # libbpf hands us printf-style format + va_list; let libc render it.
    buf = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    _log.append(buf.value.decode(errors="replace"))
    if len(_log) > 2000:  # verifier logs can be huge; keep the tail
        del _log[:1000]
    return 0


def lib() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            lib_ = _load_lib()
            for name, (restype, argtypes) in _SIGS.items():
                fn = getattr(lib_, name)
                fn.restype = restype
                fn.argtypes = argtypes
            lib_.libbpf_set_print(_print)
            _lib = lib_
        return _lib


def take_log() -> str:
    text = "".join(_log)
    _log.clear()
    return text


def _fail(what: str, err: int | None = None) -> BPFError:
    return BPFError(what, err or ctypes.get_errno() or errno.EINVAL, take_log())


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise _fail(what, -ret)
    return ret


def kernel_functions(names: list[str]) -> set[str]:
    """Which of these functions the running kernel's BTF describes (the
    ones fentry/fexit programs can attach to)."""
    btf = lib().btf__load_vmlinux_btf()
    if not btf:
        raise _fail("btf__load_vmlinux_btf")
    try:
        return {n for n in names
                if lib().btf__find_by_name_kind(btf, n.encode(), BTF_KIND_FUNC) >= 0}
    finally:
        lib().btf__free(btf)


def num_possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def probe_map_type(map_type: int) -> bool:
    return lib().libbpf_probe_bpf_map_type(map_type, None) == 1


class Link:
    """An attached program; detached by ``destroy``."""

    def __init__(self, ptr: int, name: str) -> None:
        self._ptr: int | None = ptr
        self.name = name

    def destroy(self) -> None:
        if self._ptr:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None


class Program:
    def __init__(self, ptr: int) -> None:
        self._ptr = ptr
        self.name: str = lib().bpf_program__name(ptr).decode()
        self.section: str = lib().bpf_program__section_name(ptr).decode()

    def set_autoload(self, on: bool) -> None:
        _check(lib().bpf_program__set_autoload(self._ptr, on), f"set_autoload {self.name}")

    def set_attach_target(self, function: str) -> None:
        """The kernel function a fentry/fexit program attaches to (before load)."""
        _check(lib().bpf_program__set_attach_target(self._ptr, 0, function.encode()),
               f"set_attach_target {self.name} {function}")

    def attach(self) -> Link:
        ctypes.set_errno(0)
        ptr = lib().bpf_program__attach(self._ptr)
        if not ptr:
            raise _fail(f"attach {self.name} ({self.section})")
        return Link(ptr, self.name)

    def attach_uprobe(self, binary: str, func: str, pid: int = -1) -> Link:
        opts = _UprobeOpts(sz=ctypes.sizeof(_UprobeOpts), func_name=func.encode())
        ctypes.set_errno(0)
        ptr = lib().bpf_program__attach_uprobe_opts(
            self._ptr, pid, binary.encode(), 0, ctypes.byref(opts)
        )
        if not ptr:
            raise _fail(f"attach uprobe {binary}:{func}")
        return Link(ptr, self.name)


class Map:
    def __init__(self, ptr: int) -> None:
        self._ptr = ptr
        self.name: str = lib().bpf_map__name(ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self._ptr)

    @property
    def value_size(self) -> int:
        return int(lib().bpf_map__value_size(self._ptr))

    def set_max_entries(self, n: int) -> None:
        _check(lib().bpf_map__set_max_entries(self._ptr, n), f"set_max_entries {self.name}")

    def initial_value(self) -> ctypes.Array[ctypes.c_char]:
        """Writable view of a global-data map's contents (before load)."""
        size = ctypes.c_size_t()
        ptr = lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if not ptr:
            raise _fail(f"initial_value {self.name}")
        return (ctypes.c_char * size.value).from_address(ptr)

    def update(self, key: bytes, value: bytes) -> None:
        ctypes.set_errno(0)
        if lib().bpf_map_update_elem(self.fd, key, value, 0) < 0:
            raise _fail(f"update {self.name}")

    def delete(self, key: bytes) -> None:
        ctypes.set_errno(0)
        if lib().bpf_map_delete_elem(self.fd, key) < 0 and ctypes.get_errno() != errno.ENOENT:
            raise _fail(f"delete {self.name}")

    def lookup_percpu(self, key: int, ncpus: int) -> bytes:
        """Raw per-CPU values for ``key``: ncpus slots, each 8-byte aligned."""
        slot = (self.value_size + 7) & ~7
        buf = ctypes.create_string_buffer(slot * ncpus)
        k = ctypes.c_uint32(key)
        ctypes.set_errno(0)
        if lib().bpf_map_lookup_elem(self.fd, ctypes.byref(k), buf) < 0:
            raise _fail(f"lookup {self.name}[{key}]")
        return buf.raw


class Object:
    """A BPF object file: open -> configure -> load -> attach -> close."""

    def __init__(self, path: str) -> None:
        take_log()
        ctypes.set_errno(0)
        ptr = lib().bpf_object__open_file(path.encode(), None)
        if not ptr:
            raise _fail(f"open {path}")
        self._ptr: int | None = ptr
        self.path = path

    def programs(self) -> Iterator[Program]:
        prev = None
        while True:
            prev = lib().bpf_object__next_program(self._ptr, prev)
            if not prev:
                return
            yield Program(prev)

    def program(self, name: str) -> Program:
        for p in self.programs():
            if p.name == name:
                return p
        raise KeyError(f"no program {name!r} in {self.path}")

    def maps(self) -> Iterator[Map]:
        prev = None
        while True:
            prev = lib().bpf_object__next_map(self._ptr, prev)
            if not prev:
                return
            yield Map(prev)

    def map(self, name: str) -> Map:
        ptr = lib().bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise KeyError(f"no map {name!r} in {self.path}")
        return Map(ptr)

    def rodata_offsets(self) -> dict[str, tuple[int, int]]:
        """Name -> (offset, size) of each ``const volatile`` global, from BTF."""
        btf = lib().bpf_object__btf(self._ptr)
        if not btf:
            raise _fail(f"no BTF in {self.path}", errno.ENOENT)
        sec_id = lib().btf__find_by_name_kind(btf, b".rodata", BTF_KIND_DATASEC)
        if sec_id < 0:
            return {}
        sec = _BtfType.from_address(lib().btf__type_by_id(btf, sec_id))
        vlen = sec.info & 0xFFFF
        infos = (_BtfVarSecinfo * vlen).from_address(
            lib().btf__type_by_id(btf, sec_id) + ctypes.sizeof(_BtfType)
        )
        out: dict[str, tuple[int, int]] = {}
        for vi in infos:
            var = _BtfType.from_address(lib().btf__type_by_id(btf, vi.type))
            out[lib().btf__name_by_offset(btf, var.name_off).decode()] = (vi.offset, vi.size)
        return out

    def set_rodata(self, values: dict[str, int | bool]) -> None:
        """Set ``const volatile`` globals before load (little-endian ints)."""
        rodata = next((m for m in self.maps() if m.name.endswith(".rodata")), None)
        if rodata is None:
            raise KeyError(f"no .rodata in {self.path}")
        offsets = self.rodata_offsets()
        view = rodata.initial_value()
        for name, value in values.items():
            off, size = offsets[name]
            view[off : off + size] = int(value).to_bytes(size, "little")

    def load(self) -> None:
        take_log()
        ret = lib().bpf_object__load(self._ptr)
        if ret < 0:
            raise _fail(f"load {self.path}", -ret)

    def close(self) -> None:
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> Object:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RingBuffer:
    """libbpf's own ring-buffer consumer: the fallback reader.

    The callback copies each record out at once, as libbpf reuses the memory.
    """

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        def _cb(_ctx: int, data: int, size: int) -> int:
            on_record(ctypes.string_at(data, size))
            return 0

        self._cb = _SAMPLE_FN(_cb)  # keep referenced for libbpf's lifetime
        ctypes.set_errno(0)
        ptr = lib().ring_buffer__new(map_fd, self._cb, None, None)
        if not ptr:
            raise _fail("ring_buffer__new")
        self._ptr: int | None = ptr

    def consume(self) -> int:
        """Reads every ring regardless of wakeups (records are sent without them)."""
        ret = lib().ring_buffer__consume(self._ptr)
        if ret < 0:
            raise _fail("ring_buffer__consume", -ret)
        return ret

    @property
    def epoll_fd(self) -> int:
        return lib().ring_buffer__epoll_fd(self._ptr)

    def close(self) -> None:
        if self._ptr:
            lib().ring_buffer__free(self._ptr)
            self._ptr = None
