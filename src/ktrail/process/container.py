"""Container identification from the text of /proc/PID/cgroup.

Works on cgroup v1 (one `hierarchy:controllers:path` line per hierarchy) and v2
(`0::/path`). The full 64-hex id is returned; display code shortens it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DOCKER = "docker"
CONTAINERD = "containerd"
CRIO = "cri-o"
PODMAN = "podman"
UNKNOWN = "unknown"

_PREFIX_RUNTIME: dict[str, str] = {
    "docker": DOCKER,
    "cri-containerd": CONTAINERD,
    "nerdctl": CONTAINERD,
    "crio": CRIO,
    "libpod": PODMAN,
}

# systemd driver: "<prefix>-<id>.scope"; cgroupfs drivers (cri-o, podman) drop ".scope".
_SCOPED = re.compile(r"^(docker|cri-containerd|nerdctl|crio|libpod)-([0-9a-f]{64})(?:\.scope)?$")
# conmon is the runtime's monitor process: it lives beside the container, not in it.
_MONITOR = re.compile(r"^(?:crio|libpod)-conmon-")
_BARE = re.compile(r"^[0-9a-f]{64}$")


class ContainerInfo(NamedTuple):
    id: str  # full 64 lowercase hex
    runtime: str  # docker | containerd | cri-o | podman | unknown


def _bare_runtime(parents: list[str]) -> str:
    # A bare id names its runtime only through the directories above it.
    for comp in reversed(parents):
        if comp == "docker":
            return DOCKER
        if comp == "libpod_parent":
            return PODMAN
        if comp.startswith("kubepods"):
            return CONTAINERD
    return UNKNOWN


def _from_path(path: str) -> ContainerInfo | None:
    comps = [c for c in path.split("/") if c]
    # Deepest match wins: nested containers (docker-in-docker) and sub-cgroups such as
    # cri-o's "crio-<id>.scope/container" are resolved to the innermost container.
    for i in range(len(comps) - 1, -1, -1):
        comp = comps[i]
        if _MONITOR.match(comp):
            # The monitor runs outside the container it watches; only an enclosing
            # container (podman inside docker) can hold it, so keep walking up.
            continue
        m = _SCOPED.match(comp)
        if m:
            return ContainerInfo(m.group(2), _PREFIX_RUNTIME[m.group(1)])
        if _BARE.match(comp):
            return ContainerInfo(comp, _bare_runtime(comps[:i]))
    return None


def parse_container(cgroup_text: str) -> ContainerInfo | None:
    """(id, runtime) of the container a process runs in, or None on the host."""
    for raw in cgroup_text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            path = line  # tolerate a bare path
        else:
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            path = parts[2]
        info = _from_path(path)
        if info is not None:
            return info
    return None


def container_id_from_cgroup(text: str) -> str | None:
    """Full 64-hex container id, or None when not in a container."""
    info = parse_container(text)
    return None if info is None else info.id


def container_runtime(text: str) -> str | None:
    """Runtime name for the container in `text`, or None when not in a container."""
    info = parse_container(text)
    return None if info is None else info.runtime
