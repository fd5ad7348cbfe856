"""Issue 12, finding 1: event data never reaches a person's terminal raw.
Text output, `ktrail query` tables and `ktrail tree` escape control
characters, bidi overrides and backslashes, one visible way each."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from fakeproc import make_enricher
from hypothesis import given, settings
from hypothesis import strategies as st
from ringrecords import batch, exec_record, path_record

from ktrail.decode.decoder import decode
from ktrail.events.registry import EventType
from ktrail.output.formats import JsonLines, Text
from ktrail.store.writer import StoreWriter
from ktrail.strings import printable

RunCli = Callable[[list[str]], tuple[int, str, str]]

# What an unprivileged user put in argv: a newline and a complete fake line,
# a terminal-title sequence, a screen clear, a right-to-left override.
FORGED = b"09:00:00.000000 exec  root     sshd(1) < systemd(1)  /usr/sbin/sshd -D"
HOSTILE_ARGS = [b"/bin/true", b"x\n" + FORGED, b"\x1b]0;pwned\x07", b"\x1b[2J",
                b"cod\xe2\x80\xaetxt.exe", b"back\\nslash", b"\xc2\x9b31m"]
OUR_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def hostile_events(tmp_path: Path) -> list[dict]:
    return make_enricher(tmp_path).process(decode(batch([
        exec_record(HOSTILE_ARGS, b"/bin/true", comm=b"tr\x1b[2Jue", pid=4242,
                    start_ns=10**9, ts_ns=2 * 10**9),
        path_record(EventType.CREATE, b"/tmp/\x1b[2J\n[bold]evil", comm=b"true", pid=4242,
                    start_ns=10**9, ts_ns=3 * 10**9),
    ])))


# ---- the helper -------------------------------------------------------------------


def test_printable_escapes_one_visible_way_each() -> None:
    cases = {
        "plain /usr/bin/ls -la": "plain /usr/bin/ls -la",
        "é 日本 \ufffd": "é 日本 \ufffd",          # printable text stays as it is
        "a\nb\rc\td": "a\\nb\\rc\\td",
        "\x1b]0;title\x07": "\\x1b]0;title\\x07",
        "\x00\x7f": "\\x00\\x7f",
        "\x85\x9b": "\\u0085\\u009b",              # C1 controls (code points)
        "\udcff\udc85": "\\xff\\x85",              # undecodable bytes (ktrail.strings)
        "a\u202eb\u2066c\u2069\u200f": "a\\u202eb\\u2066c\\u2069\\u200f",
        "line\u2028sep": "line\\u2028sep",
        "back\\slash": "back\\\\slash",
    }
    for given_, shown in cases.items():
        assert printable(given_) == shown, given_


@settings(max_examples=2000, deadline=None, database=None)
@given(st.text(), st.text())
def test_printable_is_one_line_and_never_confuses_two_strings(a: str, b: str) -> None:
    pa = printable(a)
    assert "\x1b" not in pa and "\n" not in pa and "\r" not in pa
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in pa)
    assert not any("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069" for c in pa)
    assert (pa == printable(b)) == (a == b)


# ---- text output ------------------------------------------------------------------


def test_text_output_has_one_line_per_event_and_no_escape_from_data(tmp_path: Path) -> None:
    events = hostile_events(tmp_path)
    for color in (False, True):
        out = Text(color=color).encode(events).decode()
        lines = out.splitlines()
        assert len(lines) == 2, lines
        exec_line = lines[0]
        assert "x\\n09:00:00.000000 exec  root     sshd(1)" in exec_line
        assert "\\x1b]0;pwned\\x07" in exec_line and "\\x1b[2J" in exec_line
        assert "cod\\u202etxt.exe" in exec_line and "\\u009b31m" in exec_line
        assert "back\\\\nslash" in exec_line       # a typed \n is not an escaped newline
        assert "tr\\x1b[2Jue(4242)" in exec_line    # comm
        assert "/tmp/\\x1b[2J\\n[bold]evil" in lines[1]
        # Only ktrail's own colour codes reach the terminal.
        assert "\x1b" not in OUR_COLOURS.sub("", out)
        assert (OUR_COLOURS.search(out) is not None) == color


def test_alert_text_escapes_the_rule_output(tmp_path: Path) -> None:
    ev = hostile_events(tmp_path)[0]
    alert = {"evt": {"type": "alert", "time": ev["evt"]["time"]},
             "alert": {"rule": "Odd\nrule", "priority": "WARNING", "mitre": [],
                       "output": "cmdline=" + " ".join(ev["proc"]["args"])},
             "proc": ev["proc"]}
    for color in (False, True):
        out = Text(color=color).encode([alert]).decode()
        assert len(out.splitlines()) == 3  # head, output, process chain: ours
        assert "\x1b" not in OUR_COLOURS.sub("", out)
        assert "x\\n09:00:00.000000 exec  root" in out and "Odd\\nrule" in out


# ---- ktrail query and ktrail tree -------------------------------------------------


def stored(tmp_path: Path) -> tuple[Path, str]:
    events = hostile_events(tmp_path)
    path = tmp_path / "trail.db"
    w = StoreWriter(str(path), warn=io.StringIO())
    w.start()
    assert w.submit_lines(JsonLines().encode(events))
    w.close()
    return path, events[0]["proc"]["exec_id"]


def test_query_table_escapes_cells(tmp_path: Path, run_cli: RunCli) -> None:
    path, _ = stored(tmp_path)
    code, out, err = run_cli(["query", "--store", str(path), "--format", "table",
                              "--type", "create"])
    assert code == 0, err
    assert "\x1b" not in out
    assert "/tmp/\\x1b[2J\\n[bold]evil" in out   # markup shown, not applied
    code, out, err = run_cli(["query", "--store", str(path), "--format", "table",
                              "select json_extract(json, '$.exec.args[2]') a from events "
                              "where type = 'exec'"])
    assert code == 0, err
    assert "\x1b" not in out and "\\x1b]0;pwned\\x07" in out


def test_tree_escapes_names_args_and_events(tmp_path: Path, run_cli: RunCli) -> None:
    path, exec_id = stored(tmp_path)
    code, out, err = run_cli(["tree", exec_id, "--store", str(path)])
    assert code == 0, err
    assert "\x1b" not in out
    assert "\\x1b]0;pwned\\x07" in out and "\\x1b[2J" in out
    assert "/tmp/\\x1b[2J\\n[bold]evil" in out
    # The forged text stays inside its label's line.
    assert not any(line.startswith("09:00:00") for line in out.splitlines())
    assert "tr\\x1b[2Jue(4242)" in out


def test_an_error_line_quoting_a_path_escapes_it(tmp_path: Path, run_cli: RunCli) -> None:
    bad = tmp_path / "no\x1b[2Jsuch\nktrail: error: forged" / "trail.db"
    code, _, err = run_cli(["query", "--store", str(bad), "--type", "exec"])
    assert code != 0
    assert "\x1b" not in err and len(err.splitlines()) == 1
    assert "no\\x1b[2Jsuch\\nktrail: error: forged" in err
