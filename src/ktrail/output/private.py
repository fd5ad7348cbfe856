"""Audit files stay private: created 0600 (directories 0700) whatever the
umask, never reached through a symbolic link someone else planted, and never
someone else's file.

The trail holds command lines, paths and user names: readable by root only.
Files and links are trusted when they belong to root or to the user ktrail
runs as. An untrusted symbolic link or file is refused with a message naming
it and its owner; the file it points to is not touched.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

FILE_MODE = 0o600
DIR_MODE = 0o700
_MAX_LINKS = 40


class PrivateFileError(OSError):
    """A path ktrail will not write to; str() is the one-line reason."""

    def __init__(self, path: str, reason: str, code: int = errno.EPERM) -> None:
        super().__init__(code, reason, path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.filename}: {self.reason}"


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _owner(uid: int) -> str:
    return f"uid {uid}"


def check_path(path: str) -> tuple[str, bool]:
    """Where to open `path`: (the path, whether its last component may be
    followed). Symbolic links are followed one by one as long as each is
    trusted (e.g. /dev/stderr -> /proc/self/fd/2 -> /dev/pts/0); a link
    of another user raises PrivateFileError, so its target is never
    opened. A /proc link to no path (a pipe, a socket) is opened through."""
    cur = path
    for _ in range(_MAX_LINKS):
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return cur, False
        if not stat.S_ISLNK(st.st_mode):
            return cur, False
        if not _trusted(st.st_uid):
            raise PrivateFileError(path, f"is a symbolic link owned by {_owner(st.st_uid)} "
                                   "(not root, not us); refusing to follow it"
                                   if cur == path else
                                   f"leads to {cur}, a symbolic link owned by "
                                   f"{_owner(st.st_uid)} (not root, not us); refusing to "
                                   "follow it")
        nxt = os.path.join(os.path.dirname(cur), os.readlink(cur))
        if cur.startswith("/proc/") and not os.path.lexists(nxt):
            return cur, True  # fd 1 of a pipe: "pipe:[1234]" is no path
        cur = nxt
    raise PrivateFileError(path, "too many levels of symbolic links", errno.ELOOP)


def make_dirs(directory: str) -> None:
    """Creates the missing directories of `directory`, each 0700 whatever
    the umask (Path.mkdir(parents=True) gives the umask's mode to parents)."""
    missing: list[str] = []
    d = os.path.abspath(directory)
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: the open's checks still apply
        os.chmod(d, DIR_MODE)  # the umask may have taken bits off (e.g. umask 0277)


def open_private(path: str, flags: int, make_parents: bool = True) -> tuple[int, os.stat_result]:
    """Opens `path` for ktrail's own files with `flags` (O_WRONLY|O_APPEND,
    O_RDONLY...), creating it 0600 if missing. Returns the descriptor and
    its stat.

    The last component is opened with O_NOFOLLOW (trusted links are
    resolved first, see check_path), and O_NONBLOCK so that a FIFO without
    a reader fails with ENXIO instead of blocking; regular files get their
    blocking mode back, FIFOs keep it (the writer polls). Raises
    PrivateFileError for a file owned by another user, OSError otherwise."""
    real, follow = check_path(path)
    if make_parents and not follow:
        make_dirs(os.path.dirname(real) or ".")
    base = flags | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(real, base | os.O_CREAT | os.O_EXCL, FILE_MODE)
            created = True
        except FileExistsError:
            fd = os.open(real, base)
            created = False
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PrivateFileError(path, "is a symbolic link (made while it was being "
                                   "opened); refusing to follow it", errno.ELOOP) from None
        if e.errno == errno.ENXIO:
            raise PrivateFileError(path, "a FIFO with no reader; start its reader first",
                                   errno.ENXIO) from None
        raise
    try:
        st = os.fstat(fd)
        if not _trusted(st.st_uid):
            raise PrivateFileError(path, f"owned by {_owner(st.st_uid)} (not root, not us); "
                                   "refusing to write to it: remove it or choose another path")
        if created:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off
        elif (stat.S_ISREG(st.st_mode) and st.st_mode & 0o022
              and st.st_uid == os.geteuid()):
            # An older file others may write to (truncate the trail): no
            # longer. Read bits an operator gave (a log shipper's group) stay.
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o022)
        if not stat.S_ISFIFO(st.st_mode):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def check_foreign(path: str) -> None:
    """Raises PrivateFileError when `path` exists and is a link or a file of
    another user (for files another program creates beside ours, such as
    SQLite's -wal and -shm)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not _trusted(st.st_uid):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"
        raise PrivateFileError(path, f"{os.path.basename(path)} is {kind} owned by "
                               f"{_owner(st.st_uid)} (not root, not us); refusing to use "
                               "it: remove it")
