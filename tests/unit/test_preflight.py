"""Refusals for kernels ktrail cannot trace on: one message, exit 2, no traceback.

The kernel facts are substituted (this is the error path, not the kernel);
the integration tests cover the real privilege checks.
"""

from __future__ import annotations

import pytest

from ktrail.cli.main import main
from ktrail.loader import features

ALL_CAPS = (1 << 41) - 1


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    facts: dict[str, object] = {"btf": True, "lockdown": "none", "ringbuf": True}
    monkeypatch.setattr(features, "effective_caps", lambda: ALL_CAPS)
    monkeypatch.setattr(features, "has_btf", lambda: facts["btf"])
    monkeypatch.setattr(features, "lockdown_mode", lambda: facts["lockdown"])
    monkeypatch.setattr(features, "has", lambda m: facts["ringbuf"] if m == "ringbuf" else True)
    return facts


@pytest.mark.parametrize(
    ("fact", "value", "words"),
    [
        ("btf", False, ["BTF is missing", "CONFIG_DEBUG_INFO_BTF"]),
        ("lockdown", "confidentiality", ["lockdown", "confidentiality"]),
        ("ringbuf", False, ["ring buffer", "5.8"]),
    ],
)
def test_run_refuses_with_the_reason(kernel: dict[str, object], capsys: pytest.CaptureFixture,
                                     fact: str, value: object, words: list[str]) -> None:
    kernel[fact] = value
    assert main(["run", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ktrail: error: cannot trace on this machine")
    assert "Traceback" not in err
    for w in words:
        assert w in err


def test_all_problems_are_listed_at_once(kernel: dict[str, object]) -> None:
    kernel.update(btf=False, lockdown="confidentiality")
    problems = features.preflight()
    assert len(problems) == 2


def test_integrity_lockdown_is_fine(kernel: dict[str, object]) -> None:
    kernel["lockdown"] = "integrity"
    assert features.preflight() == []


def test_capabilities_not_uid_decide(monkeypatch: pytest.MonkeyPatch,
                                     kernel: dict[str, object]) -> None:
    monkeypatch.setattr(features, "effective_caps",
                        lambda: (1 << features.CAP_BPF) | (1 << features.CAP_PERFMON))
    assert features.preflight() == []
    monkeypatch.setattr(features, "effective_caps", lambda: 1 << features.CAP_BPF)
    [problem] = features.preflight()
    assert "CAP_BPF + CAP_PERFMON" in problem
