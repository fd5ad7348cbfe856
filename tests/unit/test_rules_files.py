"""Rule files: merging, overrides, errors placed FILE:LINE:COL, the engine,
the default rule set and Falco's upstream files."""

from pathlib import Path

import pytest

from ktrail.rules import DEFAULT_RULES, DEFAULT_TESTS
from ktrail.rules.engine import Engine
from ktrail.rules.loader import RuleFileError, load
from ktrail.rules.testing import complete, load_tests, run_tests

BASE = """
- list: shells
  items: [sh, bash]
- macro: shell
  condition: proc.name in (shells)
- rule: Shell
  desc: a shell ran
  condition: evt.type = exec and shell
  output: shell %proc.name by %user.name
  priority: WARNING
  tags: [execution, T1059]
- rule: Other
  desc: curl ran
  condition: evt.type = exec and proc.name = curl
  output: curl
  priority: NOTICE
"""


def rules(*texts: str, dialect: str | None = None):
    files = {f"f{i}.yaml": t for i, t in enumerate(texts)}
    return load(list(files), texts=files, dialect=dialect)


def fire(rs, **proc) -> list[str]:
    ev = complete({"evt": {"type": "exec"}, "proc": proc}, 0)
    return [a["alert"]["rule"] for a in Engine(rs).process([ev])]


def test_rules_fire_with_rendered_output_and_mitre_tags() -> None:
    rs = rules(BASE)
    ev = complete({"evt": {"type": "exec"}, "proc": {"name": "bash"}}, 0)
    [a] = Engine(rs).process([ev])
    assert a["alert"]["output"] == "shell bash by root"
    assert a["alert"]["mitre"] == ["T1059"] and a["alert"]["priority"] == "WARNING"
    assert a["alert"]["events"] == [ev] and a["proc"] == ev["proc"]


def test_second_file_appends_to_a_list_and_overrides_a_condition() -> None:
    rs = rules(BASE, """
- list: shells
  items: [zsh]
  override: {items: append}
- rule: Other
  condition: and user.name = alice
  override: {condition: append}
""")
    assert fire(rs, name="zsh") == ["Shell"]
    assert fire(rs, name="curl") == []           # user is root, not alice


def test_disabling_one_rule_leaves_the_others() -> None:
    rs = rules(BASE, "- rule: Shell\n  enabled: false\n")
    assert rs.disabled == ["Shell"]
    assert fire(rs, name="bash") == [] and fire(rs, name="curl") == ["Other"]


def test_redefining_a_rule_without_override_is_an_error() -> None:
    with pytest.raises(RuleFileError) as e:
        rules(BASE, "- rule: Shell\n  condition: evt.type = exec\n  output: x\n")
    assert (e.value.path, e.value.line) == ("f1.yaml", 1)
    assert "already defined at f0.yaml:6:3" in e.value.message


def test_a_broken_rule_is_left_out_and_named_the_others_load() -> None:
    rs = rules(BASE, """
- rule: Typo
  desc: x
  condition: evt.type = exec and proc.nmae = bash
  output: x
""")
    [p] = rs.problems
    assert p.rule == "Typo" and p.unsupported == "proc.nmae"
    assert str(p) == ("f1.yaml:4:34: rule 'Typo': condition, column 21: unknown field "
                      "'proc.nmae'; did you mean proc.name or proc.pname or proc.aexe?")
    assert {r.name for r in rs.rules} == {"Shell", "Other"}


def test_a_broken_macro_names_itself_in_the_rules_that_use_it() -> None:
    rs = rules(BASE, """
- macro: shell
  condition: proc.name in (shells
""")
    [p] = rs.problems
    assert p.rule == "Shell" and "macro 'shell' (f1.yaml:3:14) does not parse" in p.message
    assert [r.name for r in rs.rules] == ["Other"]


@pytest.mark.parametrize("text, where, words", [
    ("- rule: [a\n", (2, 1), "not valid YAML"),
    ("rule: x\n", (1, 1), "YAML list"),
    ("- rulez: x\n", (1, 3), "none of rule:"),
    ("- rule: X\n  condition: evt.type = exec\n  output: x\n  priority: LOUD\n", (4, 13),
     "priority 'LOUD'"),
    ("- rule: X\n  condition: evt.type = exec\n  output: x\n  colour: red\n", (4, 3),
     "unknown key 'colour'"),
])
def test_file_mistakes_are_placed(text: str, where: tuple[int, int], words: str) -> None:
    with pytest.raises(RuleFileError) as e:
        rules(text)
    assert (e.value.line, e.value.col) == where and words in e.value.message


def test_exceptions_and_shadow_mode() -> None:
    rs = rules(BASE.replace("  tags: [execution, T1059]", """  tags: [execution, T1059]
  exceptions:
    - name: admin_shells
      fields: [proc.name, user.name]
      values: [[bash, root]]"""))
    assert fire(rs, name="bash") == [] and fire(rs, name="sh") == ["Shell"]
    shadow = rules(BASE.replace("  priority: WARNING", "  priority: WARNING\n  shadow: true"))
    eng = Engine(shadow)
    eng.process([complete({"evt": {"type": "exec"}, "proc": {"name": "bash"}}, 0)])
    assert eng.alerts_total == 0 and eng.shadow_hits == {"Shell": 1}


def test_rules_meet_only_events_of_their_types() -> None:
    eng = Engine(rules(BASE))
    assert [r.name for r in eng.rules_for("exec")] == ["Shell", "Other"]
    assert eng.rules_for("connect") == []


def test_threshold_state_is_bounded_and_counts_evictions() -> None:
    rs = rules("""
- rule: Scan
  condition: evt.type = connect
  threshold: {by: [proc.exec_id], distinct: net.dport, count: 3, within: 10s}
  output: scan
""")
    eng = Engine(rs, max_state=2)
    evs = [complete({"evt": {"type": "connect"}, "proc": {"exec_id": f"{i % 5}:1"},
                     "net": {"dport": i}}, i) for i in range(20)]
    eng.process(evs)
    st = eng.state_stats()["Scan"]
    assert st["size"] == 2 and st["evictions"] > 0


def test_default_rules_load_and_every_rule_has_passing_cases() -> None:
    rs = load([DEFAULT_RULES])
    assert rs.problems == [] and len(rs.rules) >= 30
    for r in rs.rules:
        assert r.mitre, f"{r.name}: no MITRE technique tag"
    results = run_tests(rs, load_tests(DEFAULT_TESTS))
    assert [str(r) for r in results if not r.ok] == []
    kinds = {(r.rule, r.kind) for r in results}
    for r in rs.rules:
        assert (r.name, "fires") in kinds and (r.name, "quiet") in kinds, r.name


FALCO = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "falco-rules"


@pytest.mark.skipif(not FALCO.is_dir(), reason="../shared/fixtures is not on this machine")
@pytest.mark.parametrize("name, at_least", [
    ("falco_rules.yaml", 13), ("falco-incubating_rules.yaml", 18),
    ("falco-sandbox_rules.yaml", 16),
])
def test_upstream_falco_rules_load_or_name_what_is_missing(name: str, at_least: int) -> None:
    files = [FALCO / "falco_rules.yaml"] + ([FALCO / name] if name != "falco_rules.yaml" else [])
    rs = load(files)
    mine = [r for r in rs.rules if r.where.path.endswith(name)]
    problems = [p for p in rs.problems if p.where.path.endswith(name)]
    assert len(mine) >= at_least
    for p in problems:
        assert p.unsupported, str(p)   # every left-out rule names what is missing


@pytest.mark.skipif(not FALCO.is_dir(), reason="../shared/fixtures is not on this machine")
def test_falco_rules_that_load_also_fire() -> None:
    rs = load([FALCO / "falco_rules.yaml"])
    eng = Engine(rs)
    symlink = complete({"evt": {"type": "symlink", "syscall": "symlinkat", "retval": 0},
                        "proc": {"name": "ln"},
                        "file": {"target": "/etc/shadow", "path": "/tmp/s"}}, 0)
    memfd = complete({"evt": {"type": "exec"}, "exec": {"retval": 0},
                      "proc": {"name": "x", "exe": "/memfd:x (deleted)"}}, 1)
    benign = complete({"evt": {"type": "symlink", "syscall": "symlinkat", "retval": 0},
                       "proc": {"name": "ln"},
                       "file": {"target": "/etc/hostname", "path": "/tmp/h"}}, 2)
    # A server reading /etc/shadow 10 s after it started, and one 1 s after
    # (Falco's proc_is_new: proc.duration <= 5 s).
    def shadow_read(start: str, seq: int) -> dict:
        return complete({"evt": {"type": "open", "syscall": "openat", "retval": 3},
                         "proc": {"name": "nginx", "start_time": start},
                         "file": {"path": "/etc/shadow", "flags": ["O_RDONLY"]}}, seq)
    old_server = shadow_read("2025-12-31T23:59:50.000000000Z", 3)
    new_server = shadow_read("2025-12-31T23:59:59.000000000Z", 4)
    fired = [a["alert"]["rule"] for a in eng.process(
        [symlink, memfd, benign, old_server, new_server])]
    assert fired == ["Create Symlink Over Sensitive Files", "Fileless execution via memfd_create",
                     "Read sensitive file trusted after startup"]
    # A rule on syscalls ktrail does not record is listed, not loaded to never fire.
    assert "Redirect STDOUT/STDIN to Network Connection in Container" not in {
        r.name for r in rs.rules}


def test_host_sequence_completes_across_processes() -> None:
    rs = rules("""
- rule: Two steps anywhere
  condition: evt.type in (create, exec)
  sequence:
    by: host
    within: 60s
    steps:
      - {condition: evt.type = create, key: file.path}
      - {condition: evt.type = exec, key: proc.exe}
  output: done
""")
    evs = [complete({"evt": {"type": "create"}, "proc": {"exec_id": "1:1"},
                     "file": {"path": "/tmp/x"}}, 0),
           complete({"evt": {"type": "exec"}, "proc": {"exec_id": "2:1", "exe": "/tmp/x"}}, 1)]
    assert [a["alert"]["rule"] for a in Engine(rs).process(evs)] == ["Two steps anywhere"]


def test_threshold_keeps_no_more_values_than_it_needs() -> None:
    rs = rules("""
- rule: Scan
  condition: evt.type = connect
  threshold: {by: [proc.exec_id], distinct: net.dport, count: 3, within: 10s}
  output: scan
""")
    eng = Engine(rs)
    fired = eng.process([complete({"evt": {"type": "connect"}, "net": {"dport": i},
                                   "proc": {"exec_id": "1:1"}}, i) for i in range(1000)])
    assert len(fired) == 1
    [st] = eng.state["Scan"].state.data.values()
    assert len(st["seen"]) == 4


def test_a_bad_stateful_spec_is_a_placed_problem() -> None:
    rs = rules(BASE, """
- rule: Bad threshold
  condition: evt.type = connect
  threshold: {count: 0}
  output: x
""")
    [p] = rs.problems
    assert str(p) == ("f1.yaml:2:3: rule 'Bad threshold': threshold: count: must be a "
                      "positive integer, got 0")
    assert {r.name for r in rs.rules} == {"Shell", "Other"}


def test_engines_do_not_share_state() -> None:
    rs = rules("""
- rule: Scan
  condition: evt.type = connect
  threshold: {by: [proc.exec_id], distinct: net.dport, count: 1, within: 10s}
  output: scan
""")
    ev = [complete({"evt": {"type": "connect"}, "net": {"dport": i},
                    "proc": {"exec_id": "1:1"}}, i) for i in range(2)]
    a, b = Engine(rs), Engine(rs)
    assert len(a.process(ev)) == 1 and len(b.process(ev)) == 1


def _connect(seq: int, comm: str, daddr: str, dport: int, proto: str = "tcp",
             saddr: str = "10.0.0.2") -> dict:
    return complete({"evt": {"type": "connect", "syscall": "connect", "retval": 0},
                     "proc": {"name": comm},
                     "net": {"family": "ipv4", "protocol": proto, "saddr": saddr,
                             "sport": 40000 + seq, "daddr": daddr, "dport": dport}}, seq)


@pytest.mark.skipif(not FALCO.is_dir(), reason="../shared/fixtures is not on this machine")
def test_falco_network_rules_compare_addresses_as_networks() -> None:
    rs = load([FALCO / "falco_rules.yaml", FALCO / "falco-incubating_rules.yaml"])
    wanted = {"Unexpected UDP Traffic", "System procs network activity"}
    eng = Engine(rs)
    events = [
        _connect(0, "collector", "203.0.113.5", 9999, "udp"),   # UDP, unexpected port
        _connect(1, "collector", "127.0.0.1", 9999, "udp", saddr="127.0.0.1"),  # loopback
        _connect(2, "resolver", "203.0.113.5", 53, "udp"),      # an expected UDP port
        _connect(3, "sleep", "203.0.113.5", 443),               # coreutils on the network
        _connect(4, "curl", "203.0.113.5", 443),                # a network client
    ]
    fired = [(a["alert"]["rule"], a["proc"]["name"]) for a in eng.process(events)
             if a["alert"]["rule"] in wanted]
    assert fired == [("Unexpected UDP Traffic", "collector"),
                     ("System procs network activity", "sleep")]


@pytest.mark.parametrize("cond, want", [
    ('fd.net = "127.0.0.0/8"', False),
    ('fd.net != "127.0.0.0/8"', True),
    ("fd.snet in (rfc_1918_addresses)", False),   # the server is 203.0.113.5
    ("fd.cnet in (rfc_1918_addresses)", True),    # the client is 10.0.0.2
    ('fd.rnet = "203.0.113.0/24" and fd.lnet = "10.0.0.0/8"', True),
    ("fd.sip = 203.0.113.5 and fd.sport = 443 and fd.cip = 10.0.0.2", True),
])
def test_falco_address_fields_know_client_and_server(cond: str, want: bool) -> None:
    rs = rules("""
- list: rfc_1918_addresses
  items: ['"10.0.0.0/8"', '"172.16.0.0/12"', '"192.168.0.0/16"']
- rule: R
  condition: evt.type = connect and COND
  output: x
  priority: WARNING
""".replace("COND", cond), dialect="falco")
    assert not rs.problems, rs.problems
    fired = Engine(rs).process([_connect(0, "curl", "203.0.113.5", 443)])
    assert bool(fired) is want


def test_falco_network_field_with_a_bad_network_is_a_placed_problem() -> None:
    rs = rules("""
- rule: R
  condition: evt.type = connect and fd.net = "300.0.0.0/8"
  output: x
  priority: WARNING
""", dialect="falco")
    [p] = rs.problems
    assert "fd.net" in str(p) and "300.0.0.0/8" in str(p)
