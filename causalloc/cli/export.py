"""``causalloc export DIR``: write the run table runs.csv from the run store."""

from __future__ import annotations

import argparse

DESCRIPTION = """Write the run table (one row per done or failed run: block columns, condition,
mask draw, every metric, max_abs_change_outside_mask, timing, error, trajectory JSON) from
DIR/runs.sqlite to DIR/runs.csv or --out FILE."""

EPILOG = """examples:
  causalloc export runs/tiny
  causalloc export runs/tiny --out tables/tiny_runs.csv
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write runs.csv from a run folder", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="output folder of `causalloc run`")
    parser.add_argument("--out", metavar="FILE", help="CSV path (default: DIR/runs.csv)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    from causalloc.runs import RunStore

    with RunStore(args.dir, create=False) as store:
        path = store.export_csv(args.out)
        counts = store.counts()
    print(f"wrote {path}: {counts['done']} done, {counts['failed']} failed runs "
          f"({counts['pending'] + counts['running']} not finished, not exported)")
    return 0
