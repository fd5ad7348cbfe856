"""Entry point: `ktrail <command>`."""

from __future__ import annotations

import argparse
import os
import sys

from ktrail import __version__
from ktrail.cli import doctor, query, rules, run, tree
from ktrail.cli.errors import EXIT_ENV, EXIT_ERROR, CliError
from ktrail.strings import printable

DEBUG_ENV = "KTRAIL_DEBUG"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ktrail",
        description="Linux kernel auditing sensor on tracepoints and eBPF.",
    )
    p.add_argument("--version", action="version", version=f"ktrail {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run.add_parser(sub)
    doctor.add_parser(sub)
    rules.add_parser(sub)
    query.add_parser(sub)
    tree.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help(sys.stderr)
        return EXIT_ENV
    try:
        return int(args.func(args))
    except CliError as e:
        # One line whatever it quotes (a path, a line of a file): escaped.
        print(f"ktrail: error: {printable(str(e))}", file=sys.stderr)
        for d in e.details:
            print(f"  {printable(d)}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # `ktrail run | head`: the reader went away; that is not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: one line, the traceback only when asked for
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        text = printable(str(e).splitlines()[0]) if str(e) else ""
        print(f"ktrail: error: internal error: {type(e).__name__}"
              f"{': ' + text if text else ''} (a bug: please report it; {DEBUG_ENV}=1 shows "
              "the traceback)", file=sys.stderr)
        return EXIT_ERROR
