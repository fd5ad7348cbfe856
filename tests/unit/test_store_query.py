"""Reading the store without root: canned filters, read-only raw SQL, process
trees, and the `ktrail query` / `ktrail tree` commands (time parsing is in
test_units.py)."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from storeevents import NS, World, alert, rfc3339

from ktrail.store.query import Filters, QueryError, build, prepare, run_sql
from ktrail.store.schema import open_reader
from ktrail.store.tree import TreeError, current_boot_id, resolve, summarise
from ktrail.store.tree import build as build_tree
from ktrail.store.writer import StoreWriter

# The run_cli fixture (conftest.py): main(argv) -> (exit code, stdout, stderr).
RunCli = Callable[[list[str]], tuple[int, str, str]]

# ---- a store to read ----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A shell (pid 4000) that ran ssh-keygen, curl and a process that is
    still running; an alert; pid 4001 reused by a later, exited process."""
    path = tmp_path / "trail.db"
    w = World(start_ns=1_800_000_000 * NS)
    sh = w.process(4000, "/usr/bin/bash", ["bash"], uid=1000)
    evs = [w.event(sh, "setsid", evt={"syscall": "setsid", "retval": 4000, "error": None})]
    fork, keygen = w.fork(sh, 4001)
    evs += [fork, w.exec(keygen, "/usr/bin/ssh-keygen", ["ssh-keygen", "-t", "ed25519"]),
            w.file(keygen, "create", "/home/alice/.ssh/id_ed25519"),
            w.file(keygen, "rename", "/home/alice/.ssh/t", "/home/alice/.ssh/id.pub"),
            w.exit(keygen)]
    fork, curl = w.fork(sh, 4002)
    evs += [fork, w.exec(curl, "/usr/bin/curl", ["curl", "http://10.1.2.3/"]),
            w.connect(curl, "10.1.2.3", 80), w.exit(curl, code=7)]
    fork, sleeper = w.fork(sh, 4003)
    evs += [fork, w.exec(sleeper, "/usr/bin/sleep", ["sleep", "1000"])]
    w.tick(3600 * NS)
    other = w.process(4001, "/usr/bin/true", ["true"], ticks=99999, container="c0ffee" * 2)
    evs += [w.event(other, "setsid", evt={"syscall": "setsid", "retval": 1, "error": None}),
            w.exit(other, signal="SIGKILL")]
    st = StoreWriter(str(path), warn=io.StringIO())
    st.start()
    st.submit(evs, [alert(evs[8], "Odd connect")])
    st.close()
    return path


def reader(path: Path) -> tuple[sqlite3.Connection, object]:
    conn = open_reader(str(path))
    return conn, prepare(conn)


def rows_for(path: Path, f: Filters) -> list[dict]:
    conn, guard = reader(path)
    sql, params, cols = build(f)
    _, rows = run_sql(conn, guard, sql, params)
    return [dict(zip((*cols, "json"), r, strict=True)) for r in rows]


@pytest.mark.parametrize(("f", "expect"), [
    (Filters(types=["exec"]), ["4003", "4002", "4001"]),
    (Filters(types=["exec"], exes=["/usr/bin/ssh-keygen"]), ["4001"]),
    (Filters(exes=["*/ss?-keygen"]), ["4001", "4001", "4001", "4001"]),
    (Filters(paths=["/home/alice/.ssh/*"]), ["4001", "4001"]),
    (Filters(addrs=["10.1.2.3"]), ["4002"]),
    (Filters(users=["alice"], types=["exit"]), ["4002", "4001"]),
    (Filters(users=["1000"], types=["exit"]), ["4002", "4001"]),
    (Filters(containers=["c0ffeec0ffee"]), ["4001", "4001"]),
    (Filters(types=["exec", "connect"], limit=2), ["4003", "4002", "4002"]),
])
def test_filters(store: Path, f: Filters, expect: list[str]) -> None:
    got = rows_for(store, f)
    assert [str(r["pid"]) for r in got] == expect


def test_time_filters(store: Path) -> None:
    start = 1_800_000_000 * NS
    assert len(rows_for(store, Filters(since=start + 3000 * NS))) == 2
    assert len(rows_for(store, Filters(until=start + 3000 * NS, limit=None))) == 12
    assert rows_for(store, Filters(since=start + 3000 * NS, until=start + 3001 * NS)) == []


def test_rule_filter_reads_alerts_and_refuses_event_filters(store: Path) -> None:
    got = rows_for(store, Filters(rules=["Odd*"]))
    assert [r["rule"] for r in got] == ["Odd connect"]
    assert orjson.loads(got[0]["json"])["alert"]["rule"] == "Odd connect"
    with pytest.raises(QueryError, match="--rule queries alerts; --path"):
        build(Filters(rules=["x"], paths=["/etc"]))


@pytest.mark.parametrize(("sql", "needle"), [
    ("DELETE FROM event_log", "DELETE event_log is refused"),
    ("UPDATE processes SET exe = 'x'", "UPDATE processes is refused"),
    ("INSERT INTO alerts (time, rule, json) VALUES (1, 'x', '{}')", "INSERT alerts"),
    ("DROP TABLE alerts", "refused"),
    ("CREATE TEMP TABLE t (x)", "refused"),
    ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH"),
    ("PRAGMA query_only = 0", "PRAGMA query_only = 0"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
    ("VACUUM", "read-only"),
])
def test_raw_sql_cannot_write(store: Path, sql: str, needle: str) -> None:
    conn, guard = reader(store)
    with pytest.raises(QueryError, match="read-only") as exc:
        _, rows = run_sql(conn, guard, sql)
        list(rows)
    assert needle in str(exc.value)
    assert sqlite3.connect(store).execute("SELECT count(*) FROM alerts").fetchone()[0] == 1


def test_raw_sql_reads_and_has_time_helpers(store: Path) -> None:
    conn, guard = reader(store)
    names, rows = run_sql(conn, guard, "SELECT count(*) AS n, rfc3339(min(time)) AS first "
                                       "FROM events WHERE time < ns('2030-01-01')")
    assert names == ["n", "first"]
    assert list(rows) == [(14, rfc3339(1_800_000_000 * NS + 1000 * 2))]
    names, rows = run_sql(conn, guard, "PRAGMA table_info(events)")
    assert "exec_id" in {r[1] for r in rows}
    with pytest.raises(QueryError, match=r"SQL: .*no such table"):
        run_sql(conn, guard, "SELECT * FROM nope")
    with pytest.raises(QueryError, match="one statement"):
        run_sql(conn, guard, "SELECT 1; SELECT 2")


# ---- trees --------------------------------------------------------------------------


def test_tree_of_the_shell(store: Path) -> None:
    conn, _ = reader(store)
    boot, exec_id = resolve(conn, "4000")
    assert exec_id == "4000:28000"
    t = build_tree(conn, boot, exec_id)
    assert t.ancestors == [] and t.root.proc["exe"] == "/usr/bin/bash"
    kids = {c.proc["exe"]: c for c in t.root.children}
    assert list(kids) == ["/usr/bin/ssh-keygen", "/usr/bin/curl", "/usr/bin/sleep"]
    keygen = kids["/usr/bin/ssh-keygen"]
    assert [e["summary"] for e in keygen.events] == [
        "exec ssh-keygen -t ed25519", "create /home/alice/.ssh/id_ed25519",
        "rename /home/alice/.ssh/t -> /home/alice/.ssh/id.pub"]
    curl = kids["/usr/bin/curl"]
    assert curl.events[-1]["summary"] == "connect 10.1.2.3:80"
    assert curl.alerts[0]["rule"] == "Odd connect" and curl.proc["exit_code"] == 7
    assert kids["/usr/bin/sleep"].proc["end_time"] is None
    assert t.root.more == {"setsid": 1} or t.root.events[0]["type"] == "setsid"
    # The child's ancestry goes back to the shell.
    t2 = build_tree(conn, boot, "4002:28014")
    assert [a.exec_id for a in t2.ancestors] == ["4000:28000"]
    js = t2.to_json()
    assert js["tree"]["exec_id"] == "4002:28014" and js["ancestors"][0]["pid"] == 4000


def test_tree_limits_nodes_and_events(store: Path) -> None:
    conn, _ = reader(store)
    t = build_tree(conn, *resolve(conn, "4000:28000"), max_nodes=2, max_events=1)
    assert len(t.root.children) == 1 and t.omitted == 2
    keygen = t.root.children[0]
    assert len(keygen.events) == 1 and keygen.more == {"create": 1, "rename": 1}


def test_pid_resolution(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, _ = reader(store)
    # 4001 was two processes, both exited: the caller must choose.
    with pytest.raises(TreeError, match="pid 4001 was 2 different processes") as exc:
        resolve(conn, "4001")
    assert "4001:28007" in str(exc.value) and "4001:99999" in str(exc.value)
    assert resolve(conn, "4003")[1] == "4003:28021"    # running: taken
    with pytest.raises(TreeError, match="no process with pid 9"):
        resolve(conn, "9")
    with pytest.raises(TreeError, match="neither an exec_id"):
        resolve(conn, "bash")
    # On another boot nothing is running: a single candidate is still taken.
    monkeypatch.setattr("ktrail.store.tree.current_boot_id", lambda: "another-boot")
    assert resolve(conn, "4003")[1] == "4003:28021"


def test_summaries() -> None:
    w = World()
    p = w.process(1, "/bin/sh", ["sh"])
    assert summarise(w.connect(p, "::1", 22)) == "connect [::1]:22"
    ev = w.file(p, "unlink", "/tmp/x")
    ev["evt"]["error"] = "ENOENT"
    assert summarise(ev) == "unlink /tmp/x (ENOENT)"
    ev = w.event(p, "dns", dns={"query": "example.org", "qtype": "A"}, net={"daddr": "1.1.1.1"})
    assert summarise(ev) == "dns example.org A"
    assert current_boot_id() is None or len(current_boot_id()) > 8


# ---- the commands -------------------------------------------------------------------


def test_query_command_json_csv_table(store: Path, run_cli: RunCli) -> None:
    code, out, _ = run_cli(["query", "--store", str(store), "--type", "exec", "--exe",
                            "/usr/bin/curl", "--since", "2027-01-01"])
    assert code == 0
    [ev] = [orjson.loads(line) for line in out.splitlines()]
    assert ev["proc"]["args"] == ["curl", "http://10.1.2.3/"]  # the event, whole
    code, out, _ = run_cli(["query", "--store", str(store), "--type", "exit,exec",
                            "--format", "csv", "--user", "alice"])
    lines = out.splitlines()
    assert lines[0].startswith("id,time,type,pid,exec_id,exe") and len(lines) == 6
    code, out, err = run_cli(["query", "--store", str(store), "--format", "table",
                              "--limit", "3"])
    assert code == 0 and "showing the latest 3" in err
    assert "exec_id" in out and "4001:99999" in out
    code, out, _ = run_cli(["query", "--store", str(store),
                            "select type, count(*) n from events group by type order by 1"])
    assert orjson.loads(out.splitlines()[0]) == {"type": "connect", "n": 1}
    code, out, _ = run_cli(["query", "--store", str(store),
                            "select json from events where type = 'connect'"])
    assert orjson.loads(out)["json"]["net"]["dport"] == 80  # JSON, not a string of it


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["--type", "bogus"], 2, "--type: unknown event type 'bogus'"),
    (["--since", "yesterday"], 2, "--since: 'yesterday' is neither a duration"),
    (["--since", "1h", "--until", "2h"], 2, "--since is after --until"),
    (["--limit", "-1"], 2, "--limit must be"),
    (["select 1", "--type", "exec"], 2, "either an SQL statement or filters"),
    (["delete from alerts"], 1, "read-only"),
    (["selec 1"], 1, "SQL: near \"selec\""),
    (["--rule", "x", "--addr", "1.2.3.4"], 1, "--rule queries alerts"),
])
def test_query_command_errors(store: Path, run_cli: RunCli,
                              argv: list[str], code: int, needle: str) -> None:
    got, out, err = run_cli(["query", "--store", str(store), *argv])
    assert got == code and out == ""
    assert err.startswith("ktrail: error: ") and needle in err and err.count("\n") == 1


def test_query_command_on_bad_files(tmp_path: Path, run_cli: RunCli) -> None:
    code, _, err = run_cli(["query", "--store", str(tmp_path / "none.db")])
    assert code == 2 and "no store at" in err
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    code, _, err = run_cli(["tree", "1", "--store", str(junk)])
    assert code == 2 and f"store {junk}: not a ktrail store" in err


def test_tree_command(store: Path, run_cli: RunCli) -> None:
    code, out, _ = run_cli(["tree", "4000", "--store", str(store)])
    assert code == 0
    assert "bash(4000) bash" in out and "target" in out
    assert "ssh-keygen(4001) ssh-keygen -t ed25519" in out
    assert "create /home/alice/.ssh/id_ed25519" in out
    assert "ALERT WARNING Odd connect" in out and "exit 7" in out
    assert out.index("bash(4000)") < out.index("ssh-keygen(4001)") < out.index("curl(4002)")
    code, out, _ = run_cli(["tree", "4002:28014", "--store", str(store), "--format", "json"])
    js = orjson.loads(out)
    assert js["target"] == "4002:28014" and js["ancestors"][0]["exec_id"] == "4000:28000"
    code, out, err = run_cli(["tree", "4001", "--store", str(store)])
    assert code == 1 and "pid 4001 was 2 different processes" in err and out == ""
