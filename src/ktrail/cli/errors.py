"""Errors the CLI reports as one line, with the exit code they map to."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_ENV = 2   # cannot run here (privileges, kernel) or bad usage


class CliError(Exception):
    """`message` is one line; `details`, if any, are listed one per line below
    it (several problems found at once). Both are escaped when printed."""

    def __init__(self, message: str, code: int = EXIT_ENV,
                 details: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.details = tuple(details)



def check_range(option: str, value: float, low: float, high: float) -> None:
    """A usage error naming `option` when value is outside [low, high]."""
    if not low <= value <= high:
        raise CliError(f"{option} {value}: out of range (allowed: {low} to {high})")
