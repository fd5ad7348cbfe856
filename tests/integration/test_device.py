"""Device events from the kernel's uevents."""

from __future__ import annotations

import uuid
from pathlib import Path


def test_uevent_change_is_reported(sensor) -> None:
    s = sensor()
    # Writing an action to a device's uevent file makes the kernel announce it,
    # with the UUID given as SYNTH_UUID: it tells this test's uevent from others'.
    tag = str(uuid.uuid4())
    Path("/sys/class/net/lo/uevent").write_text(f"change {tag}")
    t = s.stop()
    [e] = [e for e in t.of_type("device") if e["device"]["env"].get("SYNTH_UUID") == tag]
    assert e["device"]["devpath"] == "/devices/virtual/net/lo"
    assert e["device"]["action"] == "change" and e["device"]["subsystem"] == "net"
    assert e["device"]["env"]["INTERFACE"] == "lo"
    assert e["proc"]["pid"] == 0 and e["proc"]["comm"] == "kernel"
    assert t.final["devices"]["events"] >= 1 and t.final["devices"]["overflows"] == 0
