"""Where records come from: the BPF ring buffer and the kernel's uevents."""
