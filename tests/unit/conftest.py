"""Fixtures the unit tests share.

Helpers that test modules import by name stay in fakeproc.py, ringfixture.py
and storeevents.py: tests/integration has a conftest.py too, so neither can be
imported by name reliably (pytest loads both as the module `conftest`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fakeproc import FakeProc, make_enricher
from ringfixture import LIFECYCLE, read_fixture

from ktrail.cli.main import main
from ktrail.decode.decoder import Batch, RawBatch, decode
from ktrail.engine.enrich import Enricher, Event


@pytest.fixture(scope="module")
def raw() -> RawBatch:
    return read_fixture(str(LIFECYCLE))


@pytest.fixture(scope="module")
def batch(raw: RawBatch) -> Batch:
    return decode(raw)


@pytest.fixture
def enricher(tmp_path: Path) -> Enricher:
    return make_enricher(tmp_path)


@pytest.fixture
def events(enricher: Enricher, batch: Batch) -> list[Event]:
    return enricher.process(batch)


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """main(argv) -> (exit code, stdout, stderr); argparse's SystemExit counts as a return."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run
