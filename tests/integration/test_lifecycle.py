"""exec / fork / exit against the real kernel, with exact argv and ancestry."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid

from sensorkit import run


def test_shell_echo_exit3_acceptance(sensor) -> None:
    s = sensor()
    p = subprocess.Popen(["sh", "-c", "/bin/echo a b c; exit 3"], stdout=subprocess.PIPE)
    assert p.communicate()[0] == b"a b c\n" and p.returncode == 3
    t = s.stop()
    assert t.returncode == 0, t.stderr

    # subprocess tries each PATH entry: failed execs (ENOENT) precede the real one.
    tries = [e for e in t.of_type("exec") if e["proc"]["pid"] == p.pid]
    assert all(e["exec"]["error"] == "ENOENT" for e in tries[:-1])
    sh = tries[-1]
    assert sh["exec"]["retval"] == 0
    assert sh["proc"]["args"] == ["sh", "-c", "/bin/echo a b c; exit 3"]
    [echo] = [e for e in t.execs("/bin/echo") if e["proc"]["ppid"] == sh["proc"]["pid"]]
    assert echo["proc"]["args"] == ["/bin/echo", "a", "b", "c"]
    assert echo["exec"]["argc"] == 4 and not echo["exec"]["args_truncated"]
    assert echo["proc"]["parent"]["exec_id"] == sh["proc"]["exec_id"]
    assert echo["proc"]["ancestors"][0]["exec_id"] == sh["proc"]["exec_id"]
    assert echo["proc"]["ancestors"][1]["pid"] == os.getpid()
    assert echo["user"]["name"] == "root" and echo["proc"]["cwd"] == os.getcwd()

    exits = {e["proc"]["exec_id"]: e["exit"] for e in t.of_type("exit")}
    assert exits[echo["proc"]["exec_id"]]["code"] == 0
    assert exits[sh["proc"]["exec_id"]]["code"] == 3
    assert exits[sh["proc"]["exec_id"]]["signal"] is None
    # The run summary accounts for every record: read, or counted as dropped. (Whether
    # any was dropped depends on the whole machine's load; none of this test's was.)
    k = t.final["kernel"]
    assert k["attempted"] == t.final["reader"]["records"] + k["dropped_total"]
    assert t.final["reader"]["unreconciled"] == 0


def test_thirty_arguments(sensor) -> None:
    s = sensor()
    args = [f"arg{i:02d}-{'x' * i}" for i in range(1, 31)]
    run("/bin/true", *args, check=True)
    t = s.stop()
    [e] = [e for e in t.execs("/bin/true") if e["exec"]["args"][1:] == args
           and e["proc"]["ppid"] == os.getpid()]  # another run of this test: same args
    assert e["exec"]["argc"] == 31
    assert e["proc"]["args"] == ["/bin/true", *args]
    assert not e["exec"]["args_truncated"]


def test_argv_over_4k_is_truncated_and_flagged(sensor) -> None:
    s = sensor()
    big = ["y" * 1000 for _ in range(6)]  # ~6 KB of argv
    run("/bin/true", "marker-4k", *big, check=True)
    t = s.stop()
    [e] = [e for e in t.execs("/bin/true") if e["exec"]["args"][1:2] == ["marker-4k"]
           and e["proc"]["ppid"] == os.getpid()]  # another run of this test: same marker
    assert e["exec"]["args_truncated"] is True
    assert e["exec"]["argc"] == 8  # the true count, not what fitted
    assert len("\0".join(e["exec"]["args"])) <= 4096
    assert e["exec"]["args"][2] == "y" * 1000


def test_exit_code_and_signal(sensor) -> None:
    s = sensor()
    code3 = subprocess.Popen(["sh", "-c", "exit 3"])
    code3.wait()
    victim = subprocess.Popen(["sleep", "30"])
    victim.send_signal(signal.SIGTERM)
    victim.wait()
    killed = subprocess.Popen(["sleep", "30"])
    killed.kill()
    killed.wait()
    t = s.stop()
    by_pid = {e["proc"]["pid"]: e["exit"] for e in t.of_type("exit")}
    assert by_pid[code3.pid]["code"] == 3 and by_pid[code3.pid]["signal"] is None
    assert by_pid[victim.pid]["signal"] == "SIGTERM" and by_pid[victim.pid]["code"] is None
    assert by_pid[killed.pid]["signal"] == "SIGKILL"


def test_failed_exec_reports_errno(sensor) -> None:
    s = sensor()
    missing = f"/nonexistent/ktrail-test-{uuid.uuid4().hex[:8]}"  # no other run tries it
    with contextlib.suppress(FileNotFoundError):
        subprocess.run([missing, "x", "y"])
    t = s.stop()
    [e] = [e for e in t.of_type("exec") if e["exec"]["filename"] == missing]
    assert e["exec"]["retval"] == -2 and e["exec"]["error"] == "ENOENT"
    assert e["exec"]["args"] == [missing, "x", "y"]
    # A failed exec leaves the caller's image: proc is subprocess's forked
    # child, still running this Python, whose parent is this test.
    assert e["proc"]["parent"]["pid"] == os.getpid()
    assert e["proc"]["exe"] == os.path.realpath(sys.executable)


DOUBLE_FORK = textwrap.dedent(
    """
    import os, sys, time
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        me = os.getpid()
        if os.fork() == 0:
            os.close(r)
            # echo's output must not interleave with the pid the parent prints.
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.write(w, b"x")
            while os.getppid() == me:  # wait to be reparented
                time.sleep(0.005)
            os.execv("/bin/echo", ["/bin/echo", "grandchild-reparented", sys.argv[1]])
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.waitpid(child, 0)
    print(child, flush=True)
    time.sleep(0.5)
    """
)


def test_double_fork_grandchild_keeps_lineage(sensor) -> None:
    s = sensor()
    tag = uuid.uuid4().hex  # tells this grandchild from another run's
    p = subprocess.run([sys.executable, "-c", DOUBLE_FORK, tag], capture_output=True,
                       check=True)
    child_pid = int(p.stdout.split()[0])
    t = s.stop()
    [g] = [e for e in t.execs("/bin/echo")
           if e["exec"]["args"] == ["/bin/echo", "grandchild-reparented", tag]]
    [top] = [e for e in t.of_type("exec")
             if e["exec"]["args"][1:2] == ["-c"] and e["proc"]["ppid"] == os.getpid()
             and e["exec"]["retval"] == 0]
    [child_fork] = [e for e in t.of_type("fork") if e["fork"]["child"]["pid"] == child_pid]
    child_exec_id = child_fork["fork"]["child"]["exec_id"]
    # Reparented: the kernel's ppid moved away from the child...
    assert g["proc"]["ppid"] != child_pid
    # ...but the lineage still names who started it.
    assert g["proc"]["parent"]["exec_id"] == child_exec_id
    assert g["proc"]["parent"]["pid"] == child_pid
    lineage = [a["exec_id"] for a in g["proc"]["ancestors"]]
    assert lineage[:2] == [child_exec_id, top["proc"]["exec_id"]]
    assert child_fork["proc"]["exec_id"] == top["proc"]["exec_id"]


THREADS = "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()"


def test_threads_filtered_in_kernel_unless_asked(sensor) -> None:
    s = sensor()
    p = subprocess.Popen([sys.executable, "-c", THREADS])
    assert p.wait() == 0
    t = s.stop()
    assert t.by_pid(p.pid, "exec"), "the sensor saw the process"
    assert not [e for e in t.by_pid(p.pid, "fork") if e["fork"]["thread"]]

    s = sensor("--threads")
    p = subprocess.Popen([sys.executable, "-c", THREADS])
    p.wait()
    t = s.stop()
    threads = [e for e in t.of_type("fork") if e["fork"]["thread"] and e["proc"]["pid"] == p.pid]
    assert threads and threads[0]["fork"]["child"]["pid"] == p.pid
