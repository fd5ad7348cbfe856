"""Helpers the integration tests import by name; the fixtures are in conftest.py.

They are not in conftest.py because tests/unit has a conftest.py too: pytest
loads both as the top-level module `conftest`, so `from conftest import ...`
would get whichever was loaded last (`pytest tests/integration tests/unit`
then fails to collect).
"""

from __future__ import annotations

import subprocess
import sys

KTRAIL = [sys.executable, "-m", "ktrail"]


def run(*argv: str, check: bool = False) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, check=check, timeout=60)
