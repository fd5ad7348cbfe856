"""ktrail: a Linux kernel auditing sensor built on tracepoints and eBPF."""

__version__ = "0.1.0"
