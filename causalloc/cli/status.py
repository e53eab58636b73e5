"""``causalloc status DIR``: progress of a run folder and its failed runs."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """Count the runs of an output folder by status (pending, running, done, failed)
and list the failed runs with the last line of their error. Safe while `causalloc run` is
writing the folder."""

EPILOG = """examples:
  causalloc status runs/tiny
  causalloc status runs/tiny --json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="progress and failures of a run folder", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="output folder of `causalloc run`")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    from causalloc.runs import RunStore

    with RunStore(args.dir, create=False) as store:
        counts, failed = store.counts(), store.failed()
    total = sum(counts.values())
    if args.json:
        print(json.dumps({"dir": args.dir, "total": total, "counts": counts, "failed": failed},
                         indent=2))
        return 0
    print(f"{args.dir}: {total} runs: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for run in failed:
        print(f"  failed {run['run_id'][:12]} {run['algorithm']} seed={run['seed']} "
              f"{run['condition']} (attempts {run['attempts']}): {run['error']}")
    return 0
