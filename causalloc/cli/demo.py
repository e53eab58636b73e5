"""``causalloc demo``: the main job on the embedded default design."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  causalloc demo                      # full demo (192 matched runs), about 10 minutes on 2 CPU cores
  causalloc demo --quick --out /tmp/d # same pipeline, fewer seeds and steps, about 3 minutes
  causalloc demo --json               # print the output paths and run summary as JSON
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "demo", help="run the whole pipeline on the embedded default design",
        description="Build the tiny controlled testbed, run matched oracle / random / disjoint / "
                    "attributed masks under GradDiff, NPO and RMU, analyse, and write the report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="causalloc-demo", help="output folder (default: causalloc-demo)")
    parser.add_argument("--quick", action="store_true", help="fewer seeds and steps, smaller testbed")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from causalloc.demo import run_demo

    def log(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = run_demo(args.out, quick=args.quick, workers=args.workers, progress=True, log=log)
    if args.json:
        print(json.dumps(result))
    else:
        s = result["summary"]
        print(f"done in {result['seconds']:.0f} s: {s['done']} runs done, {s['failed']} failed, "
              f"{s['skipped']} skipped")
        print(f"report: {result['report_md']}")
        print(f"        {result['report_html']}")
    return 0 if result["summary"]["failed"] == 0 else 1
