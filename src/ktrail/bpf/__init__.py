"""Compiled BPF objects shipped inside the package (built by ``make -C bpf``)."""

from __future__ import annotations

from pathlib import Path

_DIR = Path(__file__).resolve().parent


class ObjectMissing(RuntimeError):
    pass


def object_path(name: str) -> str:
    """Path of a shipped object, e.g. ``object_path("ktrail")``."""
    path = _DIR / f"{name}.bpf.o"
    if not path.is_file():
        raise ObjectMissing(
            f"BPF object {path} is missing: this ktrail was installed without its build "
            "(run 'make -C bpf' before 'pip install .', or use scripts/setup.sh)"
        )
    return str(path)
