"""ktrail.units: sizes, durations and times, clock ticks (no root, no I/O)."""

from __future__ import annotations

import calendar

import pytest

from ktrail.units import (
    NS,
    NS_PER_TICK,
    USER_HZ,
    Rfc3339Parser,
    SizeSyntaxError,
    TimeSyntaxError,
    parse_duration,
    parse_size,
    parse_when,
    ticks,
    to_rfc3339,
)

# ---- sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("1", 1),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("100M", 100 << 20),
        ("100m", 100 << 20),
        ("1G", 1 << 30),
        ("8M", 8 << 20),
        ("1.5K", 1536),
        ("0.5M", 512 << 10),
        ("1KB", 1 << 10),
        ("1MiB", 1 << 20),
        ("2gib", 2 << 30),
        (" 64K ", 64 << 10),
        ("100B", 100),
        ("1e3", 1000),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["12Q", "", " ", "K", "M", "abc", "1T", "1 2M", "0", "0K", "-1", "-5M", "0.1",
             "nan", "inf", "-inf", "1e400"]
)
def test_parse_size_rejects(text: str) -> None:
    # The message names the text only: the CLI and the config prefix the place.
    with pytest.raises(SizeSyntaxError) as exc:
        parse_size(text)
    assert str(exc.value).startswith(repr(text) + " ")
    assert isinstance(exc.value, ValueError)


# ---- times --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h", 3600), ("2d", 172800), ("1w", 604800),
    ("1h30m", 5400), ("1.5h", 5400), (" 2D ", 172800)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds * NS


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "1h 2", "-5m", "1h-2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(TimeSyntaxError, match="not a duration"):
        parse_duration(text)


def test_when_accepts_durations_timestamps_and_epoch() -> None:
    now = 1_800_000_000 * NS
    assert parse_when("10m", now) == now - 600 * NS
    base = calendar.timegm((2026, 11, 21, 21, 45, 0)) * NS
    assert parse_when("2026-11-21T21:45:00Z", now) == base
    assert parse_when("2026-11-21T21:45:00.123456789Z", now) == base + 123456789
    assert parse_when("2026-11-21 21:45", now) == base
    assert parse_when("2026-11-21T23:45:00+02:00", now) == base
    assert parse_when("2026-11-21", now) == base - (21 * 3600 + 45 * 60) * NS
    assert parse_when("@1800000000", now) == now
    for bad in ("yesterday", "2026-13-01", "21:45", "@soon"):
        with pytest.raises(TimeSyntaxError):
            parse_when(bad, now)


def test_rfc3339_round_trip() -> None:
    parse = Rfc3339Parser()
    for ns in (0, 1_763_761_523_481_076_214, 1_763_761_523_000_000_001):
        assert parse(to_rfc3339(ns)) == ns
    assert parse("2026-11-21T21:45:23.5Z") == parse("2026-11-21T21:45:23.500000000Z")
    assert to_rfc3339(None) is None


# ---- clock ticks --------------------------------------------------------------------


def test_ticks() -> None:
    assert USER_HZ == 100
    assert NS_PER_TICK == 10_000_000
    assert ticks(0) == 0
    assert ticks(9_999_999) == 0
    assert ticks(10_000_000) == 1
    assert ticks(487_257_215_377) == 48725
    assert ticks(10**18) == 10**11
