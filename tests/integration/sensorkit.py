"""Helpers the integration tests import by name; the fixtures are in conftest.py.

They are not in conftest.py because tests/unit has a conftest.py too: pytest
loads both as the top-level module `conftest`, so `from conftest import ...`
would get whichever was loaded last (`pytest tests/integration tests/unit`
then fails to collect).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

KTRAIL = [sys.executable, "-m", "ktrail"]


def run(*argv: str, check: bool = False) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, check=check, timeout=60)


def ktrail(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs a ktrail command to its end; whatever the exit code, never a traceback."""
    p = subprocess.run([*KTRAIL, *argv], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    if check:
        assert p.returncode == 0, p.stderr
    return p


def jsonl(data: bytes | str) -> list[dict[str, Any]]:
    """ktrail's JSON lines (an --output file, `query --format json`), parsed."""
    return [orjson.loads(line) for line in data.splitlines()]


@contextlib.contextmanager
def machine_lock(what: str) -> Iterator[None]:
    """Holds `what`, one machine-wide thing a test changes (core_pattern, root's
    authorized_keys, the default store), while other runs of this suite on the
    machine wait: they take the same lock file, from whichever checkout."""
    with open(f"/run/lock/ktrail-test-{what}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def until(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Polls `what` until it returns something true, or `timeout` seconds
    pass: the sensor commits every drain, but a loaded machine may take a
    moment. Returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def probe(tmp_path: Path, tag: str = "") -> str:
    """A copy of /bin/true with a name nothing else on the machine runs."""
    path = tmp_path / f"ktrail-probe-{tag + '-' if tag else ''}{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", path)
    return str(path)
