"""``causalloc compare LABEL=DIR LABEL=DIR``: analyses of one design side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """Print (or write) one markdown table with the answer cells of several analyses
of the same design on one metric, e.g. the same spec on the norm-matched and the free-injection
testbed: per analysis its testbed diagnostics, per comparison x cell one column per analysis."""

EPILOG = """examples:
  causalloc compare norm-matched=runs/oracle_vs_random free=runs/oracle_vs_random_free
  causalloc compare a=runs/x b=runs/y --metric mu95 --out side_by_side.md
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="analyses of one design side by side", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analyses", nargs="+", metavar="LABEL=DIR",
                        help="a label and a folder holding analysis.json")
    parser.add_argument("--metric", default="aues", help="metric to compare (default: aues)")
    parser.add_argument("--out", metavar="FILE", help="write the table here (default: stdout)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    from causalloc.errors import SpecError
    from causalloc.report.answer import side_by_side
    from causalloc.report.inputs import load_inputs

    labelled = {}
    for text in args.analyses:
        label, sep, folder = text.partition("=")
        if not sep or not label or not folder:
            raise SpecError(f"compare: expected LABEL=DIR, got {text!r}")
        if label in labelled:
            raise SpecError(f"compare: label {label!r} given twice")
        labelled[label] = load_inputs(folder)
    table = side_by_side(labelled, args.metric)
    if args.out:
        Path(args.out).write_text(table)
        print(f"wrote {args.out}")
    else:
        print(table, end="")
    return 0
