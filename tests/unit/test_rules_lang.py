"""The condition language: parsing, compiling, evaluating on event dicts."""

from typing import Any

import pytest

from ktrail.rules.compiler import CompileError, Scope, compile_condition
from ktrail.rules.lang import ConditionError, parse

EXEC = {
    "evt": {"type": "exec", "time": "2026-01-01T00:00:00.000000001Z", "error": None},
    "proc": {"name": "bash", "exe": "/usr/bin/bash", "args": ["bash", "-c", "id"],
             "parent": {"exe": "/usr/sbin/sshd", "comm": "sshd", "args": ["sshd: alice"]},
             "ancestors": [{"exe": "/usr/sbin/sshd", "comm": "sshd"},
                           {"exe": "/usr/lib/systemd/systemd", "comm": "systemd"}],
             "uid": 1000, "start_time": "2025-12-31T23:59:58.000000000Z"},
    "user": {"name": "alice", "uid": 1000},
    "container": None,
    "file": {"path": "/etc/cron.d/x", "flags": ["O_WRONLY", "O_CREAT"], "mode": "0644"},
    "net": {"dport": 4444},
}


def ok(cond: str, event=EXEC, **scope) -> bool:
    return compile_condition(parse(cond), Scope(**scope)).predicate(event)


@pytest.mark.parametrize("cond, want", [
    ("proc.name = bash", True),
    ("proc.name != bash", False),
    ("proc.name in (sh, bash)", True),
    ("proc.name in (sh, zsh)", False),
    ("not proc.name in (sh, zsh)", True),
    ("proc.exe startswith /usr/ and proc.exe endswith sh", True),
    ("proc.cmdline contains '-c id'", True),
    ('proc.cmdline icontains "BASH -C"', True),
    ("proc.exe glob '/usr/*/ba?h'", True),
    ("proc.exe regex '^/usr/(s?bin)/bash$'", True),
    ("net.dport > 1024 and net.dport <= 4444", True),
    ("net.dport < 1024", False),
    ("file.flags intersects (O_RDWR, O_WRONLY)", True),
    ("file.flags intersects (O_RDONLY)", False),
    ("file.path pmatch (/etc)", True),
    ("file.path pmatch (/et)", False),
    ("proc.pname = sshd", True),
    ("proc.aname[1] = sshd and proc.aname[2] = systemd", True),
    ("proc.aname[0] = bash", True),
    ("proc.aname[3] exists", False),
    ("proc.aname = systemd", True),           # any ancestor
    ("proc.aexe in (/usr/lib/systemd/systemd)", True),
    ("basename(proc.exe) = bash", True),
    ("lower(user.name) = alice", True),
    ("container.id exists", False),
    ("evt.error = null", True),
    ("evt.error in (null, EINPROGRESS)", True),
    ("file.mode = 0644", True),               # digits against a string field
    ("(proc.name = sh or proc.name = bash) and not (user.uid = 0)", True),
    ("proc.duration = 2000000001", True),     # across a year boundary, to the ns
    ("proc.duration <= 5000000000", True),    # Falco's proc_is_new
])
def test_operators(cond: str, want: bool) -> None:
    assert ok(cond) is want


def test_macros_and_lists_expand() -> None:
    scope = {"macros": {"shell": parse("proc.name in (shells)")},
             "lists": {"shells": ["sh", "bash"]}}
    assert ok("shell and user.name = alice", **scope)
    assert ok("proc.name in (shells, zsh)", **scope)


@pytest.mark.parametrize("cond, col, words", [
    ("proc.name = ", 13, "expected a value"),
    ("(proc.name = bash", 18, "expected ')'"),
    ("proc.name = bash and", 21, "expected a field"),
    ("proc.name in (a b)", 17, "expected ',' or ')'"),
    ("proc.name = bash bash", 18, "unexpected 'bash'"),
    ("", 1, "empty condition"),
])
def test_parse_errors_name_the_column(cond: str, col: int, words: str) -> None:
    with pytest.raises(ConditionError) as e:
        parse(cond)
    assert e.value.col == col and words in e.value.message


def test_unknown_field_and_macro_are_compile_errors() -> None:
    with pytest.raises(CompileError) as e:
        ok("proc.nmae = bash")
    assert e.value.unsupported == "proc.nmae" and e.value.col == 1
    with pytest.raises(CompileError, match="unknown macro 'shelll'"):
        ok("shelll")
    with pytest.raises(CompileError, match="refers to itself"):
        ok("loop", macros={"loop": parse("loop or proc.name = x")})


def test_event_types_are_inferred_for_the_index() -> None:
    def types(cond: str, **scope):
        return compile_condition(parse(cond), Scope(**scope)).types
    assert types("evt.type = exec and proc.name = x") == {"exec"}
    assert types("evt.type in (open, create) or evt.type = rename") == {"open", "create", "rename"}
    assert types("evt.type in (open, create) and evt.type = create") == {"create"}
    assert types("proc.name = x") is None
    assert types("not evt.type = exec") is None
    assert types("evt.type in (execve, openat)", dialect="falco") == {"exec", "open", "create"}


def test_known_fields_are_the_documented_ones() -> None:
    import itertools
    import re
    from pathlib import Path

    from ktrail.rules.fields import KNOWN
    text = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    documented = set()
    for tok in re.findall(r"`([a-z_]+(?:\.[a-z_0-9{},]+)+)`", text):
        parts = re.split(r"(\{[^}]*\})", tok)
        opts = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
        documented |= {"".join(c) for c in itertools.product(*opts)
                       if not c[0].startswith(("stats.", "heartbeat."))}
    # proc.parent's members are named in prose: `exec_id`, `pid`, `exe`...
    documented |= {f"proc.parent.{k}" for k in ("pid", "exe", "comm", "args")}
    assert documented - KNOWN == set()
    assert KNOWN - documented == set()


def test_a_macro_shared_by_rules_is_judged_once_per_event(monkeypatch: Any) -> None:
    """Rules that share a macro (the defaults' file_written) pay for it once per
    event, and each event gets its own answer."""
    from ktrail.rules import fields as F
    from ktrail.rules.engine import Engine
    from ktrail.rules.loader import load

    calls: list[str] = []
    real = F.resolve

    def counting(name: str, dialect: str = "ktrail") -> Any:
        get = real(name, dialect)
        if name != "file.path":
            return get

        def counted(e: dict[str, Any]) -> Any:
            calls.append(name)
            return get(e)
        return counted

    monkeypatch.setattr(F, "resolve", counting)
    text = """
- macro: below_etc
  condition: file.path startswith /etc/
- rule: A
  desc: a
  condition: evt.type = create and below_etc
  output: a
  priority: WARNING
- rule: B
  desc: b
  condition: evt.type = create and below_etc and proc.name = sh
  output: b
  priority: WARNING
"""
    rs = load(["mem.yaml"], texts={"mem.yaml": text})
    assert not rs.problems
    engine = Engine(rs)

    def create(path: str) -> dict[str, Any]:
        return {"evt": {"type": "create"}, "proc": {"name": "sh", "comm": "sh"},
                "file": {"path": path}}

    alerts = engine.process([create("/etc/passwd"), create("/tmp/x"), create("/etc/x")])
    assert [a["alert"]["rule"] for a in alerts] == ["A", "B", "A", "B"]
    assert len(calls) == 3  # one evaluation per event, not one per rule
