"""``causalloc index REPORTS``: write the index of the committed reports (reports/README.md)
from the report folders and a prose template."""

from __future__ import annotations

import argparse

DESCRIPTION = """Write the index of a folder of reports (default REPORTS/README.md) from the
template REPORTS/README.template.md, whose placeholders are filled from the report folders:
{{table}} (one row per folder: question, seeds, runs, K, comparisons, how to regenerate it,
links to its other files), {{answers}} (each analysis' question and the **Answer:**
paragraph its report opens with), {{answer:NAME}} and {{question:NAME}} (one folder's).
Every number and count comes from the folders' analysis.json and runs.csv; the first line of
the written file names the command. --check writes nothing and fails (exit 1) when the
index differs from what the command would write."""

EPILOG = """examples:
  causalloc index reports                       # writes reports/README.md
  causalloc index reports --check               # exit 1 when reports/README.md is stale
  causalloc index reports --out /tmp/index.md   # somewhere else
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index", help="write reports/README.md from the report folders and a template",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", metavar="REPORTS", help="folder of report folders")
    parser.add_argument("--template", metavar="FILE", default=None,
                        help="prose template (default: REPORTS/README.template.md)")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="index to write (default: REPORTS/README.md)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the index is not what it would write")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from causalloc.report.index import check_index, write_index

    if args.check:
        problem = check_index(args.reports, args.template, args.out)
        if problem:
            print(problem)
            return 1
        print("index is up to date")
        return 0
    print(f"index: {write_index(args.reports, args.template, args.out)}")
    return 0
