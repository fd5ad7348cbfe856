"""Device events from the kernel's uevent broadcasts (sources/uevents.py):
not a BPF record; the kernel sends them, so `proc` is the kernel."""

from __future__ import annotations

from ktrail.events.model import Event, EventKind, Field, Hook


def _summary(e: Event) -> str:
    d = e["device"]
    text = f"{d.get('action')} {d.get('subsystem') or ''} {d.get('devpath')}"
    return text + (f" (/dev/{d['devname']})" if d.get("devname") else "")


KINDS = (
    EventKind(
        "device", 41, "device",
        "devices added, removed, bound or changed (USB, disks, network interfaces), from the "
        "kernel's uevents",
        record=None,
        choices=(Hook("netlink", (), "NETLINK_KOBJECT_UEVENT"),),
        fields=(
            Field("device.action", "string", "`add`, `remove`, `change`, `bind`, `unbind`, "
                  "`move`"),
            Field("device.devpath", "string", "the device's path under /sys"),
            Field("device.subsystem", "string or null", "`usb`, `block`, `net`..."),
            Field("device.devname", "string or null", "its name under /dev"),
            Field("device.devtype", "string or null", "`disk`, `partition`, `usb_device`..."),
            Field("device.driver", "string or null", "the driver bound"),
            Field("device.product", "string or null", "USB vendor/product/version"),
            Field("device.seqnum", "int or null", "the kernel's uevent sequence number"),
            Field("device.env", "object", "every key the kernel sent"),
        ),
        summary=_summary, falco=(),
    ),
)
