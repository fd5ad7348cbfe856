"""Issue 12, finding 2: strings that are not UTF-8 are written to JSON without
ambiguity (valid text with U+FFFD, the exact bytes in a `_b64` sibling), and
the exact bytes can always be recovered."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import orjson
from fakeproc import make_enricher
from hypothesis import given, settings
from hypothesis import strategies as st
from ringrecords import batch, exec_record, path_record

from ktrail.decode.decoder import decode
from ktrail.events.registry import FIELDS, EventType
from ktrail.output.formats import JsonLines, dumps
from ktrail.store.query import Filters, build, prepare, run_sql
from ktrail.store.schema import open_reader
from ktrail.store.writer import StoreWriter
from ktrail.strings import B64, for_json, raw, with_exact
from ktrail.strings import decode as decode_text


def run(tmp_path: Path, records: list[bytes]) -> list[dict[str, Any]]:
    """Records -> decode -> enrich -> `--format json` lines, parsed back."""
    events = make_enricher(tmp_path).process(decode(batch(records)))
    return [orjson.loads(line) for line in JsonLines().encode(events).splitlines()]


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def b64_keys(o: Any, prefix: str = "") -> set[str]:
    """Dotted names of every `_b64` key in an event (list items: their list's name)."""
    out: set[str] = set()
    if isinstance(o, dict):
        for k, v in o.items():
            name = f"{prefix}{k}"
            if k.endswith(B64):
                out.add(name)
            out |= b64_keys(v, name + ".")
    elif isinstance(o, list):
        for v in o:
            out |= b64_keys(v, prefix)
    return out


def test_an_undecodable_byte_and_its_backslash_spelling_differ(tmp_path: Path) -> None:
    # The pair: a byte 0xFF, and the four characters `\xff`.
    real, fake = b"/tmp/x_\xff", b"/tmp/x_\\xff"
    evs = run(tmp_path, [path_record(EventType.CREATE, real),
                         path_record(EventType.CREATE, fake)])
    a, b = (e["file"] for e in evs)
    assert a["path"] == "/tmp/x_\ufffd" and a["path_b64"] == b64(real)
    assert b["path"] == "/tmp/x_\\xff" and "path_b64" not in b
    assert orjson.dumps(a) != orjson.dumps(b)


def test_exec_strings_keep_their_exact_bytes(tmp_path: Path) -> None:
    args = [b"/tmp/\xfeprog", b"a\xffb", b"plain", b"\xe2\x80"]  # the last: a cut character
    comm = b"c\xe9t"  # Latin-1, not UTF-8
    (ev,) = run(tmp_path, [exec_record(args, b"/tmp/\xfeprog", comm=comm)])
    x, p = ev["exec"], ev["proc"]
    assert x["args"] == ["/tmp/\ufffdprog", "a\ufffdb", "plain", "\ufffd"]
    assert x["args_b64"] == [b64(a) for a in args]
    assert x["filename"] == "/tmp/\ufffdprog" and x["filename_b64"] == b64(b"/tmp/\xfeprog")
    assert p["comm"] == "c\ufffdt" and p["comm_b64"] == b64(comm)
    assert p["args_b64"] == [b64(a) for a in args]
    assert p["exe_b64"] == b64(b"/tmp/\xfeprog") and p["name_b64"] == b64(b"\xfeprog")
    # Back to the exact bytes, from the JSON alone.
    assert [raw(a) for a in with_exact(x)["args"]] == args
    assert raw(with_exact(p)["comm"]) == comm
    # Every sibling is a documented field (proc.ancestors' members aside).
    assert b64_keys(ev) <= set(FIELDS)


def test_a_comm_cut_inside_a_character_is_flagged_like_any_other(tmp_path: Path) -> None:
    # The kernel keeps 15 bytes of a name: "abcdefghijklmn" + the first byte of "é".
    comm = b"abcdefghijklmn\xc3"
    (ev,) = run(tmp_path, [exec_record([b"x"], b"/bin/x", comm=comm)])
    assert ev["proc"]["comm"] == "abcdefghijklmn\ufffd"
    assert ev["proc"]["comm_b64"] == b64(comm)


def test_valid_utf8_is_unchanged_and_has_no_sibling(tmp_path: Path) -> None:
    args = ["/usr/bin/écho", "naïve", "a\\xffb", "日本"]
    evs = run(tmp_path, [exec_record([a.encode() for a in args], args[0].encode(),
                                     comm="écho".encode()),
                         path_record(EventType.CREATE, "/tmp/ß\\n".encode())])
    assert evs[0]["exec"]["args"] == args and evs[0]["proc"]["comm"] == "écho"
    assert evs[1]["file"]["path"] == "/tmp/ß\\n"
    assert not b64_keys(evs)


# Byte strings that the kernel may hand over: any bytes but NUL.
names = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b""))


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(names, max_size=5), names)
def test_bytes_to_json_and_back(args: list[bytes], path: bytes) -> None:
    e = {"proc": {"args": [decode_text(a) for a in args]}, "file": {"path": decode_text(path)}}
    back = orjson.loads(dumps(e))
    assert [raw(a) for a in with_exact(back["proc"])["args"]] == args
    assert raw(with_exact(back["file"])["path"]) == path
    # Valid UTF-8 needs no sibling and is written as it is.
    if all(_utf8(a) for a in args):
        assert "args_b64" not in back["proc"] and back["proc"]["args"] == [a.decode()
                                                                          for a in args]


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=400, deadline=None, database=None)
@given(names, names)
def test_two_byte_strings_never_give_the_same_json(a: bytes, b: bytes) -> None:
    ja = dumps({"file": {"path": decode_text(a)}})
    jb = dumps({"file": {"path": decode_text(b)}})
    assert (ja == jb) == (a == b)


def test_for_json_copies_nothing_when_all_is_valid() -> None:
    e = {"proc": {"args": ["a", "é"], "ancestors": [{"exe": "/bin/sh"}]}}
    assert for_json(e) is e


def test_the_store_keeps_and_finds_them(tmp_path: Path) -> None:
    real, fake = b"/tmp/x_\xff", b"/tmp/x_\\xff"
    same = {"start_ns": 10**9, "comm": b"c\xe9t"}  # one process, its comm not UTF-8
    events = make_enricher(tmp_path).process(decode(batch([
        exec_record([b"/bin/c\xe9t", b"\xff"], b"/bin/c\xe9t", ts_ns=2 * 10**9, **same),
        path_record(EventType.CREATE, real, ts_ns=3 * 10**9, **same),
        path_record(EventType.CREATE, fake, ts_ns=4 * 10**9, **same)])))
    lines = JsonLines().encode(events)
    path = tmp_path / "trail.db"
    st_ = StoreWriter(str(path), warn=io.StringIO())
    st_.start()
    # As the sensor hands them over: the output's JSON lines.
    assert st_.submit_lines(lines)
    st_.close()
    conn = open_reader(str(path))
    guard = prepare(conn)
    # Stored whole, siblings and all, as the output wrote them.
    _, rows = run_sql(conn, guard, "select json from events order by id")
    assert [orjson.loads(r[0]) for r in rows] == [orjson.loads(x) for x in lines.splitlines()]
    sql, params, _ = build(Filters(types=["create"], paths=["/tmp/x_*"]))
    _, rows = run_sql(conn, guard, sql, params)
    found = {r[-1] for r in rows}
    conn.close()
    stored = [orjson.loads(j)["file"] for j in found]
    by_text = {f["path"]: f for f in stored}
    assert set(by_text) == {"/tmp/x_\ufffd", "/tmp/x_\\xff"}
    assert base64.b64decode(by_text["/tmp/x_\ufffd"]["path_b64"]) == real
    assert "path_b64" not in by_text["/tmp/x_\\xff"]
