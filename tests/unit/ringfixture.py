"""The recorded ring fixture, for unit tests (see tests/fixtures/record.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from ktrail.decode.decoder import RawBatch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LIFECYCLE = FIXTURES / "lifecycle.ring"
EVENTS = FIXTURES / "events.ring"


def _load_record_module() -> ModuleType:
    # record.py is a root-only tool, not a package module: load it by path.
    spec = importlib.util.spec_from_file_location("ktrail_fixture_record", FIXTURES / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


read_fixture: Callable[[str], RawBatch] = _load_record_module().read
