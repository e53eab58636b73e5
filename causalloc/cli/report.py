"""``causalloc report DIR``: write report.md, report.html, tables.tex and figures/ from an
analysis folder (the one holding analysis.json)."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """Write the report of an analysis: report.md, one self-contained report.html
(figures embedded, no external references), booktabs tables.tex and figures/*.pdf plus
figures/*.png (300 dpi). Line 1 of report.md is the question (`question = "..."` in the
analysis spec, recorded in analysis.json; else built from the comparisons), the first
paragraph the **Answer:**, counting the verdicts per comparison; a family that cannot reject
at its size is said once under it. Then one table, a row per comparison and cell, a column
per primary metric, each cell the verdict, the difference a - b with its 95% CI and the
blocks used (coloured by verdict in HTML); then the setup, the localization accuracy, the
figures, and every comparison's sentence in an appendix.

DIR holds analysis.json (from `causalloc analyze`); runs.csv is looked up in DIR or its
parent and masks in DIR/masks or DIR/../masks (v_tgt.json there, the testbed's oracle region,
adds the localization-accuracy table). Figures whose data are absent are skipped with a note
in the report. Works on analyses of external CSV tables too."""

EPILOG = """examples:
  causalloc report runs/analysis                 # writes next to analysis.json
  causalloc report runs/analysis --out paper/    # somewhere else
  causalloc report runs/analysis --json          # print the written paths as JSON
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write report.md/.html, tables.tex and figures from analysis.json",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="folder holding analysis.json (or the file)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: DIR)")
    parser.add_argument("--json", action="store_true",
                        help="print the written paths and skipped figures as JSON")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from causalloc.report import write_report

    written = write_report(args.dir, args.out)
    if args.json:
        print(json.dumps({key: [str(p) for p in value] if isinstance(value, list)
                          else value if isinstance(value, dict) else str(value)
                          for key, value in written.items()}, indent=1))
        return 0
    print(f"report: {written['report_html']}")
    print(f"        {written['report_md']}, {written['tables_tex']}, "
          f"{len(written['figures']) // 2} figures in {written['report_md'].parent / 'figures'}")
    for name, why in written["skipped_figures"].items():
        print(f"skipped figure {name}: {why}")
    return 0
