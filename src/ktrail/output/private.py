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


def check_path(path: str) -> str:
    """The path to open: `path` itself, or where a trusted symbolic link at
    `path` leads (e.g. /dev/stderr). Raises PrivateFileError for a link
    planted by another user, so that its target is never opened."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        if not _trusted(st.st_uid):
            raise PrivateFileError(path, f"is a symbolic link owned by {_owner(st.st_uid)} "
                                   "(not root, not us); refusing to follow it")
        return os.path.realpath(path)
    return path


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

    The last component is opened with O_NOFOLLOW (a trusted link is
    resolved first, see check_path), and O_NONBLOCK so that a FIFO without
    a reader fails with ENXIO instead of blocking; regular files get their
    blocking mode back, FIFOs keep it (the writer polls). Raises
    PrivateFileError for a file owned by another user, OSError otherwise."""
    real = check_path(path)
    if make_parents:
        make_dirs(os.path.dirname(real) or ".")
    base = flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
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
