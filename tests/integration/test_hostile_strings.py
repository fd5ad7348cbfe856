"""Issue 12, findings 1 and 2, against the real sensor: an unprivileged user's
argv and file names cannot forge text lines or reach the terminal raw, and
file names that are not UTF-8 stay distinct and exact in the JSON."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sensorkit import KTRAIL

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def run_text_sensor(tmp_path: Path, workload) -> bytes:
    """`ktrail run --format text` to a file while `workload()` runs; its output."""
    out = tmp_path / "trail.txt"
    k = subprocess.Popen([*KTRAIL, "run", "--format", "text", "--output", str(out),
                          "--no-store", "--stats-interval", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        assert k.stderr is not None
        err = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = k.stderr.readline().decode()
            err.append(line)
            if not line or "ready in" in line:
                break
        assert "ready in" in err[-1], "".join(err)
        workload()
        time.sleep(0.5)  # the drain timer picks up the last records
        k.send_signal(signal.SIGINT)
        _, rest = k.communicate(timeout=180)  # a loaded machine detaches slowly
        assert k.returncode == 0, "".join(err) + rest.decode()
        assert b"Traceback" not in rest
    finally:
        if k.poll() is None:
            k.kill()
            k.wait()
    return out.read_bytes()


def test_nobody_cannot_forge_lines_or_send_escapes_in_text_output(tmp_path: Path) -> None:
    marker = f"h12-{uuid.uuid4().hex[:12]}"
    forged = f"09:00:00.000000 exec  root     sshd(1) < systemd(1)  /usr/sbin/sshd -D {marker}"
    # A directory nobody can write to, for a file name with a screen clear in it.
    work = Path(tempfile.mkdtemp(prefix="ktrail-h12-", dir="/tmp"))
    work.chmod(0o777)
    bad_name = f"{marker}-\x1b[2J\n[bold]evil"
    env = {"PATH": "/usr/bin:/bin", "H1": f"{marker}\n{forged}", "H2": "\x1b]0;pwned\x07",
           "H3": "\x1b[2J", "H4": "cod\u202etxt", "H5": "typed\\n", "F": str(work / bad_name)}

    def workload() -> None:
        # The hostile bytes are in nobody's argv and file name only (sh reads
        # them from its environment): root's setpriv line carries none.
        subprocess.run([*NOBODY, "/bin/sh", "-c",
                        'exec /bin/true "$H1" "$H2" "$H3" "$H4" "$H5"'],
                       env=env, check=True)
        subprocess.run([*NOBODY, "/bin/sh", "-c", ': > "$F"'], env=env, check=True)

    try:
        out = run_text_sensor(tmp_path, workload)
    finally:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    # No ESC byte at all: event data is escaped, and a file gets no colours.
    assert b"\x1b" not in out
    lines = out.decode().splitlines()
    assert not any(line.startswith("09:00:00.000000 exec") for line in lines)
    [exec_line] = [line for line in lines if f"'{marker}\\n09:00" in line]
    assert " exec " in exec_line and " nobody " in exec_line
    assert f"\\n{forged}" in exec_line
    assert "\\x1b]0;pwned\\x07" in exec_line and "\\x1b[2J" in exec_line
    assert "cod\\u202etxt" in exec_line and "typed\\\\n" in exec_line
    [create_line] = [line for line in lines if " create " in line and marker in line]
    assert f"{marker}-\\x1b[2J\\n[bold]evil" in create_line and " nobody " in create_line


def test_file_names_not_utf8_are_distinct_and_exact_in_json(sensor, tmp_path: Path) -> None:
    d = os.fsencode(tempfile.mkdtemp(prefix="ktrail-h12-", dir="/tmp"))
    real, fake = d + b"/x_\xff", d + b"/x_\\xff"  # the byte 0xFF; the text `\xff`
    s = sensor()
    for name in (real, fake):
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600))
    args = [b"/bin/true", b"caf\xe9", b"\xff\xfe"]
    # setpriv drops to nobody and becomes /bin/true in place (same pid).
    p = subprocess.Popen([*[a.encode() for a in NOBODY], *args])
    assert p.wait(timeout=120) == 0
    t = s.stop(timeout=180)
    for name in (real, fake):
        os.unlink(name)
    os.rmdir(d)
    created = {base64.b64decode(e["file"]["path_b64"]) if "path_b64" in e["file"]
               else e["file"]["path"].encode(): e["file"]
               for e in t.by_pid(os.getpid(), "create")
               if e["file"]["path"].startswith(os.fsdecode(d))}
    assert set(created) == {real, fake}
    assert created[real]["path"] == os.fsdecode(d) + "/x_\ufffd"
    assert created[fake]["path"] == os.fsdecode(d) + "/x_\\xff"
    assert "path_b64" not in created[fake]
    # argv of an unprivileged exec: text for reading, exact bytes for evidence.
    [x] = [e for e in t.by_pid(p.pid, "exec") if e["exec"]["filename"] == "/bin/true"]
    assert x["proc"]["uid"] == 65534
    assert x["exec"]["args"] == ["/bin/true", "caf\ufffd", "\ufffd\ufffd"]
    assert [base64.b64decode(a) for a in x["exec"]["args_b64"]] == args
    assert [base64.b64decode(a) for a in x["proc"]["args_b64"]] == args


FAR_FUTURE = r"""
import ctypes, sys
class Ts(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
libc = ctypes.CDLL(None, use_errno=True)
times = (Ts * 2)(Ts(1 << 40, 0), Ts(-(1 << 41), 5))
libc.utimensat(-100, sys.argv[1].encode(), times, 0)
"""


def test_a_time_past_64_bits_does_not_stop_the_sensor(sensor, tmp_path: Path) -> None:
    # Found by the decoder fuzz test: utimensat takes any second, and its ns
    # did not fit a JSON integer. Any user can ask that for a file of theirs.
    work = Path(tempfile.mkdtemp(prefix="ktrail-h12-", dir="/tmp"))
    work.chmod(0o777)
    target = work / "stamp"
    s = sensor()
    p = subprocess.Popen([*NOBODY, "/bin/sh", "-c", f': > {target}; exec "$0" -c "$1" {target}',
                          sys.executable, FAR_FUTURE])
    assert p.wait(timeout=120) == 0
    time.sleep(0.5)
    # Still running, and still auditing: a later event of ours is there.
    assert s.proc.poll() is None
    subprocess.run(["/bin/true", "after-the-far-future"], check=True)
    t = s.stop(timeout=180)
    target.unlink()
    work.rmdir()
    assert t.returncode == 0, t.stderr
    [u] = [e for e in t.by_pid(p.pid, "utimes") if e["file"]["path"] == str(target)]
    assert u["file"]["atime"] == str((1 << 40) * 10**9)
    assert u["file"]["mtime"] == str(-(1 << 41) * 10**9 + 5)
    assert [e for e in t.of_type("exec") if e["exec"]["args"] == ["/bin/true",
                                                                  "after-the-far-future"]]
