from __future__ import annotations

import pytest

from ktrail.process import (
    ContainerInfo,
    container_id_from_cgroup,
    container_runtime,
    parse_container,
)

ID = "3f4a9c2b1e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
ID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
POD = "pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901"
PODU = "pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"


def v1(path: str) -> str:
    """A realistic cgroup v1 file with the container path on every hierarchy."""
    lines = [
        f"12:pids:{path}",
        f"11:memory:{path}",
        f"10:cpu,cpuacct:{path}",
        f"9:devices:{path}",
        "8:rdma:/",
        f"7:blkio:{path}",
        f"1:name=systemd:{path}",
        "0::/",
    ]
    return "\n".join(lines) + "\n"


def v2(path: str) -> str:
    return f"0::{path}\n"


CASES: list[tuple[str, str, str]] = [
    ("docker v1 cgroupfs", v1(f"/docker/{ID}"), "docker"),
    ("docker v2 systemd", v2(f"/system.slice/docker-{ID}.scope"), "docker"),
    ("docker v1 systemd", v1(f"/system.slice/docker-{ID}.scope"), "docker"),
    ("docker-in-docker", v2(f"/docker/{ID2}/docker/{ID}"), "docker"),
    (
        "k8s containerd systemd v2",
        v2(
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-{POD}.slice/cri-containerd-{ID}.scope"
        ),
        "containerd",
    ),
    (
        "k8s containerd systemd v1 besteffort",
        v1(
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-{POD}.slice/cri-containerd-{ID}.scope"
        ),
        "containerd",
    ),
    ("k8s cgroupfs v1", v1(f"/kubepods/burstable/{PODU}/{ID}"), "containerd"),
    ("k8s cgroupfs v2 guaranteed", v2(f"/kubepods/{PODU}/{ID}"), "containerd"),
    (
        "cri-o systemd v2",
        v2(f"/kubepods.slice/kubepods-{POD}.slice/crio-{ID}.scope"),
        "cri-o",
    ),
    (
        "cri-o v2 sub-cgroup",
        v2(f"/kubepods.slice/kubepods-{POD}.slice/crio-{ID}.scope/container"),
        "cri-o",
    ),
    ("cri-o cgroupfs v1", v1(f"/kubepods/besteffort/{PODU}/crio-{ID}"), "cri-o"),
    ("podman rootful v2", v2(f"/machine.slice/libpod-{ID}.scope"), "podman"),
    ("podman v2 sub-cgroup", v2(f"/machine.slice/libpod-{ID}.scope/container"), "podman"),
    (
        "podman rootless v2",
        v2(f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
        "podman",
    ),
    ("podman cgroupfs v1", v1(f"/libpod_parent/libpod-{ID}"), "podman"),
]


@pytest.mark.parametrize(
    ("text", "runtime"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_container_patterns(text: str, runtime: str) -> None:
    assert parse_container(text) == ContainerInfo(ID, runtime)
    assert container_id_from_cgroup(text) == ID
    assert container_runtime(text) == runtime


HOST: list[tuple[str, str]] = [
    ("v2 session", v2("/user.slice/user-1000.slice/session-3.scope")),
    ("v2 service", v2("/system.slice/sshd.service")),
    ("v2 root", v2("/")),
    ("v1 host", v1("/user.slice/user-1000.slice/session-3.scope")),
    ("v1 docker daemon", v1("/system.slice/docker.service")),
    ("kubelet", v2("/system.slice/kubelet.service")),
    ("empty", ""),
    ("crio conmon", v2(f"/kubepods.slice/kubepods-{POD}.slice/crio-conmon-{ID}.scope")),
    ("podman conmon", v2(f"/machine.slice/libpod-conmon-{ID}.scope")),
    ("podman conmon v1", v1(f"/machine.slice/libpod-conmon-{ID}.scope")),
    ("pod slice only", v2(f"/kubepods.slice/kubepods-{POD}.slice")),
    ("short id", v2("/docker/3f4a9c2b1e8d")),
    ("uppercase hex", v2(f"/docker/{ID.upper()}")),
]


@pytest.mark.parametrize("text", [h[1] for h in HOST], ids=[h[0] for h in HOST])
def test_host_processes(text: str) -> None:
    assert parse_container(text) is None
    assert container_id_from_cgroup(text) is None
    assert container_runtime(text) is None


def test_bare_id_with_unknown_parent() -> None:
    # A 64-hex cgroup name is a container even under a custom cgroup parent.
    assert parse_container(v2(f"/custom-parent/{ID}")) == ContainerInfo(ID, "unknown")


def test_conmon_inside_outer_container() -> None:
    text = v2(f"/docker/{ID2}/machine.slice/libpod-conmon-{ID}.scope")
    assert parse_container(text) == ContainerInfo(ID2, "docker")


def test_garbage_lines_ignored() -> None:
    assert container_id_from_cgroup(f"garbage\n\n0::/docker/{ID}\n") == ID
