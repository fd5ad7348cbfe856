"""Process context: /proc reading, container ids, user names and the process table."""

from .container import (
    ContainerInfo,
    container_id_from_cgroup,
    container_runtime,
    parse_container,
)
from .procfs import PF_KTHREAD, ProcFS, ProcInfo, ProcStat, parse_stat
from .table import Process, ProcessTable, make_exec_id, parse_exec_id
from .users import UserNames

__all__ = [
    "PF_KTHREAD",
    "ContainerInfo",
    "ProcFS",
    "ProcInfo",
    "ProcStat",
    "Process",
    "ProcessTable",
    "UserNames",
    "container_id_from_cgroup",
    "container_runtime",
    "make_exec_id",
    "parse_container",
    "parse_exec_id",
    "parse_stat",
]
