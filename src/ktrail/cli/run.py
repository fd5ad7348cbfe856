"""`ktrail run`: load the sensor and stream events."""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
from collections import Counter

from ktrail import memory
from ktrail.cli.errors import EXIT_ERROR, CliError, check_range
from ktrail.config import DEFAULT_PATH as DEFAULT_CONFIG
from ktrail.config import Config, ConfigError
from ktrail.config import load as load_config
from ktrail.engine.builder import SensorOptions, build
from ktrail.engine.detect import Detector, RulesError
from ktrail.engine.pipeline import RunOptions
from ktrail.engine.tamper import DEFAULT_HEARTBEAT_S, DEFAULT_STALL_S
from ktrail.loader import features
from ktrail.loader.catalog import CATALOG, UnknownEvent, parse_events
from ktrail.loader.profiles import PROFILES
from ktrail.loader.sensor import (
    MAX_RING_BYTES,
    MIN_RING_BYTES,
    SensorConfig,
    SensorError,
    ring_size,
)
from ktrail.loader.watch import DEFAULT_WATCH
from ktrail.output.formats import FORMATS, make_format
from ktrail.output.private import PrivateFileError
from ktrail.output.target import FdStream, RotatingFile, Target
from ktrail.rules import DEFAULT_RULES
from ktrail.sinks.output import EventFilter, OutputSink
from ktrail.sinks.store import StoreProcess
from ktrail.sources.ringbuf import DEFAULT_READER, READERS
from ktrail.store import DEFAULT_PATH as DEFAULT_STORE
from ktrail.store import MIN_STORE_BYTES, StoreError
from ktrail.store.retention import Retention
from ktrail.units import (
    ID_MAX,
    PID_MAX_LIMIT,
    SizeSyntaxError,
    TimeSyntaxError,
    parse_duration,
    parse_size,
)

MAX_ROTATE_KEEP = 1000  # rotation renames each kept file in turn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="trace and stream events", description=(
        "Load the sensor and stream events: human-readable on a terminal, JSON lines "
        "otherwise. Stats records (event counts, losses, process table) are part of "
        "the stream."))
    p.add_argument("--config", metavar="PATH",
                   help=f"configuration file (default: {DEFAULT_CONFIG} if it exists)")
    p.add_argument("--profile", choices=tuple(PROFILES), default=None,
                   help="event set: " + "; ".join(f"{p.name}: {p.description}"
                                                  for p in PROFILES.values())
                        + " (default: the configuration's, else default)")
    p.add_argument("--events", metavar="LIST",
                   help="comma-separated event types to trace instead of the profile's, or "
                        f"'all': {','.join(CATALOG)}")
    p.add_argument("--watch", action="append", default=[], metavar="PATH",
                   help="also report opens of PATH (globs allowed; repeatable); "
                        "sensitive files such as /etc/shadow are watched by default")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="text on a terminal, json otherwise (default: auto)")
    p.add_argument("--output", metavar="PATH", help="write to PATH instead of stdout")
    p.add_argument("--rotate-size", default="100M", metavar="SIZE",
                   help="rotate --output past SIZE (default: 100M)")
    p.add_argument("--rotate-keep", type=int, default=5, metavar="N",
                   help="rotated files to keep (default: 5)")
    p.add_argument("--pid", type=int, action="append", default=[], metavar="PID",
                   help="only events of this process (repeatable)")
    p.add_argument("--comm", action="append", default=[], metavar="NAME",
                   help="only events whose comm is NAME (repeatable)")
    p.add_argument("--uid", type=int, action="append", default=[], metavar="UID",
                   help="only events of this real uid (repeatable)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("--threads", action="store_true", help="also report thread creation")
    p.add_argument("--ring-size", default="8M", metavar="SIZE",
                   help="kernel ring buffer size, rounded up to a power of two (default: 8M)")
    p.add_argument("--reader", choices=tuple(READERS), default=DEFAULT_READER,
                   help="ring reader: mmap (batch decode over the mapped ring; x86) or libbpf "
                        f"(its consumer, with acquire loads) (default here: {DEFAULT_READER})")
    p.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="rule file loaded after the default rules (repeatable): it may add "
                        "rules, or append to, override or disable default ones")
    p.add_argument("--no-default-rules", action="store_true",
                   help="load only the --rules files, not the default rule set")
    p.add_argument("--no-rules", action="store_true", help="record only; no detection")
    p.add_argument("--alerts-only", action="store_true",
                   help="write alerts only, not the events (stats and heartbeat records "
                        "still go out)")
    p.add_argument("--syscall-hooks", choices=("auto", "tracepoint"), default="auto",
                   help="how syscalls are hooked: auto = fentry/fexit where the kernel allows "
                        "(costs only the hooked syscalls), else tracepoints (any enabled "
                        "syscall tracepoint slows every syscall); tracepoint = tracepoints only "
                        "(default: auto)")
    p.add_argument("--stats-interval", type=float, default=60.0, metavar="SECONDS",
                   help="emit a stats record this often; 0 = only at exit (default: 60)")
    p.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_S,
                   metavar="SECONDS",
                   help="emit a small heartbeat record this often, so that silence shows "
                        f"downstream; 0 = none (default: {DEFAULT_HEARTBEAT_S:g})")
    p.add_argument("--stall-threshold", type=float, default=DEFAULT_STALL_S, metavar="SECONDS",
                   help="the sensor or its store process not running for this long (SIGSTOP, "
                        "a debugger) raises a tamper alert; 0 = not checked "
                        f"(default: {DEFAULT_STALL_S:g})")
    p.add_argument("--max-procs", type=int, default=65536, metavar="N",
                   help="process table bound; evictions are counted (default: 65536)")
    st = p.add_argument_group("audit trail store", "an SQLite database `ktrail query` and "
                              "`ktrail tree` read while the sensor runs (docs/store.md)")
    st.add_argument("--store", metavar="PATH",
                    help=f"store the trail in PATH (default: the configuration's, else "
                         f"{DEFAULT_STORE})")
    st.add_argument("--no-store", action="store_true", help="do not store the trail")
    st.add_argument("--store-retain", metavar="DURATION",
                    help="delete events older than this, e.g. 12h, 7d, 4w; 0 = keep by size "
                         f"only (default: {DEFAULT_RETAIN})")
    st.add_argument("--store-max-size", metavar="SIZE",
                    help="delete the oldest events past this size, e.g. 500M, 4G "
                         f"(default: {DEFAULT_MAX_SIZE})")
    p.set_defaults(func=run)


DEFAULT_RETAIN = "7d"
DEFAULT_MAX_SIZE = "1G"


def _size(text: str, what: str) -> int:
    """parse_size, its error prefixed with where the size came from."""
    try:
        return parse_size(text)
    except SizeSyntaxError as e:
        raise CliError(f"{what}: {e}") from None


def _store_options(args: argparse.Namespace, config: Config) -> tuple[str, Retention] | None:
    """(path, retention) of the store, or None when it is off."""
    sc = config.store
    if args.no_store:
        if args.store or args.store_retain or args.store_max_size:
            raise CliError("--no-store turns the store off; it cannot go with --store, "
                           "--store-retain or --store-max-size")
        return None
    if not sc.enabled and not args.store:
        return None
    path = args.store or sc.path or DEFAULT_STORE
    retain = args.store_retain or sc.retain or DEFAULT_RETAIN
    what = "--store-retain" if args.store_retain else "store.retain"
    try:
        max_age = None if retain.strip() == "0" else parse_duration(retain)
    except TimeSyntaxError as e:
        raise CliError(f"{what}: {e}") from None
    if max_age is not None and max_age <= 0:
        raise CliError(f"{what}: {retain!r} must be positive (or 0: no age limit)")
    max_size = _size(args.store_max_size or sc.max_size or DEFAULT_MAX_SIZE,
                     "--store-max-size" if args.store_max_size else "store.max_size")
    if max_size < MIN_STORE_BYTES:
        raise CliError(f"--store-max-size must be at least {MIN_STORE_BYTES >> 20}M")
    return path, Retention(max_age_ns=max_age, max_bytes=max_size)


def _target(args: argparse.Namespace, rotate_bytes: int) -> tuple[Target, OSError | None]:
    """The output target, and for stdout the error it already has (closed,
    or a pipe whose reader is gone): that is said once and the run goes on
    with the store. A bad --output is refused before anything starts."""
    if not args.output:
        try:
            return FdStream.stdout(), None
        except OSError as e:
            if e.errno == errno.EBADF:
                # Closed (`>&-`): hold fd 1 with /dev/null, so that no file
                # opened later (the store's) becomes fd 1 and gets the output.
                null = os.open(os.devnull, os.O_WRONLY)
                if null != 1:
                    os.dup2(null, 1)
                    os.close(null)
                e = OSError(errno.EBADF, "closed at start")
            return FdStream(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), "stdout"), e
    try:
        return RotatingFile(args.output, rotate_bytes, args.rotate_keep), None
    except PrivateFileError as e:
        raise CliError(f"--output {args.output}: {e.reason}") from None
    except OSError as e:
        raise CliError(f"--output {args.output}: {e.strerror}") from None


def _no_sink(e: OSError) -> str:
    what = "closed" if e.errno == errno.EBADF else (e.strerror or str(e))
    return (f"stdout: {what}, and the store is off: nothing would keep the trail; give "
            "--output PATH, or keep the store on")


def run(args: argparse.Namespace) -> int:
    # Every usage check comes first, before anything touches the kernel.
    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None
    profile = PROFILES[args.profile or config.profile]
    try:
        if args.events is not None:
            events = parse_events(args.events)
        elif args.profile is not None:
            events = (profile.events | config.enable) - config.disable
        else:
            events = config.events()
    except UnknownEvent as e:
        raise CliError(f"--events: {e}") from None
    if args.duration is not None and not (0 < args.duration < math.inf):
        raise CliError(f"--duration must be a positive number of seconds, not {args.duration}")
    if not (0 <= args.stats_interval < math.inf):
        raise CliError(f"--stats-interval must be 0 or more seconds, not {args.stats_interval}")
    if not (0 <= args.heartbeat_interval < math.inf):
        raise CliError("--heartbeat-interval must be 0 or more seconds, not "
                       f"{args.heartbeat_interval}")
    # Under a second a busy loop iteration on a loaded machine would count.
    if not (args.stall_threshold == 0 or 1 <= args.stall_threshold < math.inf):
        raise CliError("--stall-threshold must be 0 (off) or at least 1 second, not "
                       f"{args.stall_threshold}")
    if args.max_procs < 1:
        raise CliError("--max-procs must be at least 1")
    # More entries than the kernel can have pids is no bound at all.
    check_range("--max-procs", args.max_procs, 1, PID_MAX_LIMIT)
    if args.rotate_keep < 0:
        raise CliError("--rotate-keep must be 0 or more")
    check_range("--rotate-keep", args.rotate_keep, 0, MAX_ROTATE_KEEP)
    for pid in args.pid:
        check_range("--pid", pid, 1, PID_MAX_LIMIT)
    for uid in args.uid:
        check_range("--uid", uid, 0, ID_MAX)
    ring = _size(args.ring_size, "--ring-size")
    if ring < MIN_RING_BYTES:
        raise CliError(f"--ring-size must be at least {MIN_RING_BYTES >> 10}K, so that the "
                       "largest record (an exec with full argv) always fits")
    if ring > MAX_RING_BYTES:
        raise CliError(f"--ring-size {args.ring_size}: the kernel's ring buffer holds at most "
                       f"{MAX_RING_BYTES >> 30}G (a power of two that fits 32 bits)")
    rotate_bytes = _size(args.rotate_size, "--rotate-size")
    store_opts = _store_options(args, config)
    detector = None
    if args.no_rules:
        if args.alerts_only or args.rules:
            raise CliError("--no-rules turns detection off; it cannot go with --rules or "
                           "--alerts-only")
    else:
        rule_files = ([] if args.no_default_rules else [DEFAULT_RULES]) + [
            *config.rules, *args.rules]
        if not rule_files:
            raise CliError("--no-default-rules needs at least one --rules FILE")
        try:
            # Loaded before the sensor starts: a bad rule file stops nothing.
            detector = Detector(rule_files)
        except RulesError as e:
            raise CliError(str(e)) from None
    fmt_name = args.format
    tty = not args.output and os.isatty(1)
    if fmt_name == "auto":
        fmt_name = "text" if tty else "json"
    fmt = make_format(fmt_name, color=fmt_name == "text" and tty)

    problems = features.preflight()
    if problems:
        raise CliError("cannot trace on this machine:", details=problems)
    # A reader that goes away must give EPIPE (counted), never kill the sensor.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    target, target_error = _target(args, rotate_bytes)
    if target_error is not None and store_opts is None:
        target.close()
        raise CliError(_no_sink(target_error))
    # Before the store process is forked: it inherits the settings.
    memory.tune_malloc()
    store = None
    if store_opts is not None:
        try:
            # Opened before the kernel is touched: a bad store file stops nothing.
            # Its writer runs in a process of its own (the other core).
            store = StoreProcess(store_opts[0], store_opts[1])
        except StoreError as e:
            if not e.disk_full or target_error is not None:
                target.close()
                raise CliError(str(e)) from None
            # No room is no reason to stop recording: the stream goes on.
            print(f"ktrail: warning: {e}; the trail is not stored in this run (the output "
                  "stream goes on)", file=sys.stderr, flush=True)
    output = OutputSink(fmt, target,
                        EventFilter(frozenset(args.pid), frozenset(args.comm),
                                    frozenset(args.uid)), alerts_only=args.alerts_only,
                        sole=store is None)
    if target_error is not None:
        output.writer.fail(target_error)
    features.ensure_tracefs()
    options = SensorOptions(
        sensor=SensorConfig(
            events=events, ring_bytes=ring, trace_threads=args.threads,
            watch_paths=DEFAULT_WATCH + config.watch + tuple(args.watch),
            open_writes=profile.open_writes, ptrace_all=profile.ptrace_all,
            raw_fallback=profile.raw_fallback, uring_all=profile.uring_all,
            ignore=config.ignore, syscall_hooks=args.syscall_hooks),
        run=RunOptions(duration=args.duration, stats_interval=args.stats_interval,
                       heartbeat_interval=args.heartbeat_interval,
                       stall_threshold=args.stall_threshold),
        reader=args.reader, max_procs=args.max_procs, detector=detector,
        sinks=[output], store=store)
    try:
        built = build(options)
    except BaseException as e:
        # Whatever stopped the start, the store's child process (which
        # ignores SIGTERM) and the output's thread end with it.
        output.close()
        if store is not None:
            store.close()
        if not isinstance(e, SensorError):
            raise
        hint = ""
        if e.errno in (errno.ENOMEM, errno.E2BIG):
            # The ring is the largest allocation by far: name the option.
            hint = (f" (--ring-size {args.ring_size} asks the kernel for "
                    f"{ring_size(ring) >> 20} MiB of kernel memory; try a smaller one)")
        raise CliError(f"the sensor failed to start: {e}{hint}") from None

    try:
        pipeline = built.pipeline
        signal.signal(signal.SIGINT, pipeline.stop)
        signal.signal(signal.SIGTERM, pipeline.stop)
        if detector is not None:
            signal.signal(signal.SIGHUP, detector.request_reload)
        if store is not None:
            print(f"ktrail: storing the trail in {store.path} (keeping "
                  f"{store.retention.describe()}); `ktrail query` and `ktrail tree` read it",
                  file=sys.stderr, flush=True)
        sensor = built.sensor
        plan = sensor.plan
        mechanisms = Counter(h.mechanism for hooks in plan.hooks.values() for h in hooks)
        print(f"ktrail: tracing {len(plan.hooks)} event types ({', '.join(sorted(plan.hooks))})"
              f" with {len(sensor.attached)} programs "
              f"({', '.join(f'{m} {n}' for m, n in sorted(mechanisms.items()))} hooks); "
              f"ring {sensor.ring_bytes >> 10} KiB, "
              f"{args.reader} reader; {built.seeded} processes from /proc; ready in "
              f"{built.ready_ms:.0f} ms ('ktrail doctor' shows the hooks)",
              file=sys.stderr, flush=True)
        if detector is not None:
            print(f"ktrail: {len(detector.engine.ruleset.rules)} detection rules"
                  f"{', alerts only' if args.alerts_only else ''}; SIGHUP reloads them",
                  file=sys.stderr, flush=True)
        for name, why in sorted(plan.unavailable.items()):
            print(f"ktrail: not tracing {name}: {why}", file=sys.stderr, flush=True)
        final = pipeline.run()
        lost = final["kernel"]["dropped_total"]
        stored = ""
        if final["store"] is not None:
            st = final["store"]
            stored = f", {st['written']} stored"
            # `written` counts only what is still on disk: a deleted store
            # file's events are `deleted`.
            missing = st["shed"] + st["failed"] + st.get("deleted", 0)
            if missing:
                stored += f" ({missing} not stored: see stats.store)"
            if st.get("tamper"):
                stored += (f"; the store file was deleted, moved or replaced under the sensor "
                           f"(tamper: {st['tamper']}, {st['deleted']} stored events gone with "
                           "it)")
        det = final.get("detection")
        alerts = "" if det is None else f", {det['alerts']} alerts"
        # With --alerts-only the output has only alerts: "0 written" would read as a fault.
        # The output is closed by now: its counts include what it could not
        # take at exit, after the final record was made.
        dropped = output.writer.stats()["dropped_events"]
        written = "" if args.alerts_only else (
            f", {final['output_events'] - dropped} written")
        if dropped:
            written += f" ({dropped} not written: see stats.output)"
        print(f"ktrail: {final['events_total']} events{alerts}{written}{stored}, {lost} lost",
              file=sys.stderr, flush=True)
        if pipeline.error is not None and output.reader_gone:
            return 0  # `ktrail run --no-store | head`: the reader went away, not a fault
        if pipeline.error is not None:
            print(f"ktrail: error: stopped: {pipeline.error}", file=sys.stderr, flush=True)
            return EXIT_ERROR
        return 0
    finally:
        built.close()
        output.close()  # idempotent: run() closed the sinks unless it never started
        if store is not None:
            store.close()
