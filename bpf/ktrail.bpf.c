// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ktrail sensor: one BPF object built from one compilation unit, so every
 * program shares the same ring buffer and counters. Each area lives in its
 * own file; the loader attaches only the programs of enabled event types.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "process.bpf.c"
#include "syscall.bpf.h"
#include "file.bpf.c"
#include "net.bpf.c"
#include "task.bpf.c"
#include "kernel.bpf.c"
#include "uring.bpf.c"
