"""Errors the CLI reports as one line, with the exit code they map to."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_ENV = 2   # cannot run here (privileges, kernel) or bad usage


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ENV) -> None:
        super().__init__(message)
        self.code = code


def parse_size(text: str, what: str) -> int:
    """'100M', '512k', '1G', '4096' -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "KMG" else (t, "")
    try:
        value = int(float(num) * units[unit])
    except (ValueError, OverflowError):  # 'abc', 'inf', '1e400'; int(nan) is ValueError
        raise CliError(f"{what}: {text!r} is not a size (examples: 4096, 512K, 100M, 1G)") from None
    if value <= 0:
        raise CliError(f"{what}: {text!r} must be positive")
    return value
