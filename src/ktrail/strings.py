"""Text that others chose (file names, argv, comm, /proc): decoded without
loss, written to JSON without ambiguity, shown to people without escapes.

Bytes from the kernel or /proc need not be UTF-8, and may hold terminal
control sequences. Three forms:

- **Inside the sensor** (the process table, decoders): `decode()` keeps
  valid UTF-8 as it is and turns each byte that is not part of valid UTF-8
  into the lone surrogate U+DC80..U+DCFF (Python's `surrogateescape`), so
  `raw()` gives the exact bytes back. Valid UTF-8 never decodes to a lone
  surrogate, so the two kinds of string cannot meet.
- **In events and JSON** (`for_json`): such a string becomes its text with
  U+FFFD for the undecodable bytes, and a sibling key `<key>_b64` holds the
  exact bytes in base64 (for a list, a list with each element's bytes).
  Valid strings are left exactly as they are and get no sibling.
- **For people** (`printable`): control characters, bidi overrides and
  backslashes are written as visible escapes, one way each, so that a line
  of text output or a table cell is always exactly one line.
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

B64 = "_b64"  # suffix of the sibling key that holds a string's exact bytes


class Counter:
    """Strings decode() found not valid UTF-8, in this process. While it is 0
    no string in the sensor holds undecodable bytes, so the enricher skips
    looking for them."""

    __slots__ = ("undecodable",)

    def __init__(self) -> None:
        self.undecodable = 0


COUNTS = Counter()


def decode(b: bytes) -> str:
    """Bytes from the kernel or /proc -> str, losslessly (see the module doc)."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        COUNTS.undecodable += 1
        return b.decode("utf-8", "surrogateescape")


# Any surrogate: from decode() only U+DC80..U+DCFF, but a str can hold others.
_SURROGATE = re.compile("[\ud800-\udfff]")


def exact(s: str) -> bool:
    """True when `s` is valid Unicode text (no undecodable bytes in it)."""
    return s.isascii() or _SURROGATE.search(s) is None


def raw(s: str) -> bytes:
    """The bytes a decode()d string came from."""
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate decode() never makes: keep it visible
        return s.encode("utf-8", "surrogatepass")


def text(s: str) -> str:
    """`s` as valid text: undecodable bytes become U+FFFD."""
    return s if exact(s) else raw(s).decode("utf-8", "replace")


def b64(s: str) -> str:
    return base64.b64encode(raw(s)).decode("ascii")


def unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _item(v: Any) -> Any:
    if isinstance(v, str):
        return text(v)
    return for_json(v)


def for_json(o: Any) -> Any:
    """`o` with every string made valid text and given its `_b64` sibling
    where it held undecodable bytes. Returns `o` itself when nothing needs
    it (the common case: no copy is made)."""
    if isinstance(o, dict):
        out: dict[Any, Any] | None = None
        for i, (k, v) in enumerate(o.items()):
            new, sibling = v, None
            if isinstance(v, str):
                if not exact(v):
                    new, sibling = text(v), b64(v)
            elif isinstance(v, (dict, list, tuple)):
                new = for_json(v)
                if new is not v and isinstance(v, (list, tuple)) and any(
                        isinstance(x, str) and not exact(x) for x in v):
                    sibling = [b64(x) if isinstance(x, str) else None for x in v]
            # Keys are ktrail's own, but a map of the kernel's (device.env) may not be.
            key_ok = not isinstance(k, str) or exact(k)
            if out is None:
                if new is v and key_ok:
                    continue
                out = dict(itertools.islice(o.items(), i))  # the unchanged ones before
            key = k if key_ok else text(k)
            out[key] = new
            if sibling is not None:
                out[f"{key}{B64}"] = sibling
        return o if out is None else out
    if isinstance(o, (list, tuple)):
        items = [_item(v) for v in o]
        if all(a is b for a, b in zip(items, o, strict=True)):
            return o
        return items
    if isinstance(o, str):
        return text(o)
    return o


def with_exact(o: dict[str, Any]) -> dict[str, Any]:
    """The inverse of for_json on one object: each `<key>_b64` sibling put
    back into `<key>` as the decode()d form of its exact bytes."""
    out = dict(o)
    for k, v in o.items():
        if not k.endswith(B64) or k[: -len(B64)] not in o:
            continue
        key = k[: -len(B64)]
        if isinstance(v, str):
            out[key] = unb64(v).decode("utf-8", "surrogateescape")
        elif isinstance(v, list):
            out[key] = [x if b is None else unb64(b).decode("utf-8", "surrogateescape")
                        for x, b in zip(o[key], v, strict=False)]
        del out[k]
    return out


# ---- for people -----------------------------------------------------------------------

# C0 controls (newline, ESC...), DEL, C1 controls, the line and paragraph
# separators, the bidi marks, embeddings, overrides and isolates (which
# reorder what a reader sees), lone surrogates (undecodable bytes), and the
# backslash itself, so that an escape in the data cannot pass for one of ours.
_UNSAFE = re.compile(
    "[\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    if n < 0x80:
        return f"\\x{n:02x}"
    if 0xDC80 <= n <= 0xDCFF:
        # An undecodable byte: \x80..\xff. A code point of that range is
        # written \u0080..\u00ff, so the two never look alike.
        return f"\\x{n - 0xDC00:02x}"
    return f"\\u{n:04x}"


def printable(s: str) -> str:
    """`s` safe to show on a terminal, as one line: `\\n`, `\\x1b`, `\\u202e`,
    `\\xff` (an undecodable byte) and `\\\\` for a backslash; any other
    character as it is."""
    if s.isascii() and s.isprintable() and "\\" not in s:
        return s
    return _UNSAFE.sub(_escape, s)
