"""Watched (sensitive) paths, kept in the kernel as (device, inode) pairs.

Matching by inode in the kernel cannot be dodged with a relative path, a
symlink or a hard link. Files like /etc/shadow are replaced on every change
(new inode), so the set is re-resolved periodically by the run loop.
"""

from __future__ import annotations

import glob
import os
import stat
import struct

from ktrail.loader.libbpf import Map

# kt_watch values (bpf/file.bpf.c).
WATCH_FILE = 1
WATCH_DIR = 2
IGNORE_DIR = 4

_KEY = struct.Struct("<IIQ")  # struct kt_watch_key: dev, pad, ino
_VALUE = struct.Struct("<I")
MAX_ENTRIES = 1024

DEFAULT_WATCH = (
    "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers",
    "/etc/sudoers.d", "/etc/security/opasswd", "/etc/ssh/ssh_host_*_key", "/root/.ssh",
    "/home/*/.ssh", "/root/.bash_history", "/home/*/.bash_history", "/etc/crontab",
    "/var/spool/cron",
)


def kernel_dev(st_dev: int) -> int:
    """Userspace st_dev -> the kernel's s_dev encoding (MKDEV: major << 20 | minor)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


# Directory levels listed below a watched directory. The kernel checks only
# an opened file and its parent, so each directory below must be listed.
DIR_DEPTH = 4


def _add(out: dict[tuple[int, int], int], st: os.stat_result, kind: int) -> bool:
    key = (kernel_dev(st.st_dev), st.st_ino)
    out[key] = out.get(key, 0) | kind
    return len(out) < MAX_ENTRIES


def _walk_dirs(out: dict[tuple[int, int], int], top: str, kind: int = WATCH_DIR) -> bool:
    """Every directory under `top`, DIR_DEPTH levels deep; False once full."""
    base = top.rstrip("/").count("/")
    for root, dirs, _files in os.walk(top, onerror=lambda _e: None):
        if root.count("/") - base >= DIR_DEPTH:
            dirs[:] = []
            continue
        for d in dirs:
            try:
                st = os.stat(os.path.join(root, d))
            except OSError:
                continue
            if not _add(out, st, kind):
                return False
    return True


def resolve(patterns: tuple[str, ...],
            ignore: tuple[str, ...] = ()) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    for top in ignore:
        try:
            st = os.stat(top)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and (not _add(out, st, IGNORE_DIR)
                                         or not _walk_dirs(out, top, IGNORE_DIR)):
            return out
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            try:
                st = os.stat(path)
            except OSError:
                continue  # not there now; the next refresh looks again
            if stat.S_ISDIR(st.st_mode):
                if not _add(out, st, WATCH_DIR) or not _walk_dirs(out, path):
                    return out
            elif not _add(out, st, WATCH_FILE):
                return out
    return out


class WatchSet:
    def __init__(self, kmap: Map, patterns: tuple[str, ...],
                 ignore: tuple[str, ...] = ()) -> None:
        self.map = kmap
        self.patterns = patterns
        self.ignore = ignore
        self.current: dict[tuple[int, int], int] = {}

    def refresh(self) -> int:
        """Brings the kernel set up to date; returns the number of entries."""
        new = resolve(self.patterns, self.ignore)
        for key in self.current.keys() - new.keys():
            self.map.delete(_KEY.pack(key[0], 0, key[1]))
        for key, kind in new.items():
            if self.current.get(key) != kind:
                self.map.update(_KEY.pack(key[0], 0, key[1]), _VALUE.pack(kind))
        self.current = new
        return len(new)
