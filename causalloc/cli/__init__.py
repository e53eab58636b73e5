"""The ``causalloc`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``; heavy imports (torch) happen inside the handlers so that
``causalloc analyze`` and ``causalloc report`` start without torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

from causalloc import __version__
from causalloc.errors import CausallocError

#: subcommand module names, in the order ``--help`` lists them
COMMANDS = ("demo", "testbed", "localize", "layerfit", "plan", "run", "status", "export", "analyze", "report", "index", "compare",
            "audit", "import_")

EPILOG = """examples:
  causalloc demo --quick --out demo-out          # the whole pipeline on the embedded default
  causalloc testbed build --json                 # build (or reuse) the tiny controlled testbed
  causalloc localize --method activations --budget 0.1 --out masks/
  causalloc layerfit --draws 3 --out layerfit/   # per-layer fits: oracle vs random regions
  causalloc plan analyses/example_tiny.toml --json  # can each family reject at this size?
  causalloc run analyses/example_tiny.toml --out runs/ --workers 2
  causalloc analyze runs/ --out runs/analysis
  causalloc report runs/analysis
  causalloc index reports                        # reports/README.md from the reports
  causalloc compare norm-matched=runs/a free=runs/b   # two analyses side by side
  causalloc audit data/claims/lee2025.yaml --out audit/
  causalloc import open-unlearning saves/unlearn/* --condition-from 'mask_([a-z]+)' --out runs.csv
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="causalloc",
        description="Causal tests of parameter localization in language-model unlearning.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"causalloc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"causalloc.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with _sigterm_as_exit():
        try:
            return int(args.func(args) or 0)
        except CausallocError as exc:
            print(f"causalloc {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


@contextlib.contextmanager
def _sigterm_as_exit():
    """While a command runs, SIGTERM (``kill``, a job scheduler) raises SystemExit(143) in
    the main thread, so the command cleans up as on Ctrl-C: ``causalloc run`` ends its worker
    processes instead of leaving them running. Outside the main thread nothing changes."""
    def terminate(signum, frame):
        print("terminated", file=sys.stderr)
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
