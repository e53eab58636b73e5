"""``causalloc import``: other frameworks' runs -> a causalloc run table (runs.csv)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Turn other frameworks' outputs into a causalloc run table that `causalloc analyze` and
`causalloc audit --runs` read. open-unlearning: run folders (.hydra/config.yaml,
evals/TOFU_SUMMARY.json, optional checkpoint-*/evals/); block columns model, forget_split,
trainer, seed from the config (add more with --block NAME=KEY); the condition from a config
key or a run-name regex (--condition-from). csv: any CSV with columns renamed by --map."""

EPILOG = """\
examples:
  causalloc import open-unlearning saves/unlearn/ --condition-from 'mask_(?P<condition>\\w+)' \\
      --out runs.csv
  causalloc import open-unlearning run_a run_b --condition-from mask.kind \\
      --block lr=trainer.args.learning_rate --out runs.csv
  causalloc analyze runs.csv --block model,forget_split,trainer,seed --condition condition \\
      --metric forget_quality,model_utility --sesoi forget_quality=0.05,model_utility=0.02 \\
      --out analysis/
  causalloc import csv theirs.csv --map seed=Seed,condition=mask,aues=AUES --out runs.csv
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="read other frameworks' runs into a run table",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    ou = kinds.add_parser("open-unlearning", help="open-unlearning run folders",
                          description=DESCRIPTION, epilog=EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    ou.add_argument("dirs", nargs="+", metavar="DIR",
                    help="run folders, or folders to search for run folders")
    ou.add_argument("--out", required=True, metavar="CSV_OR_DIR",
                    help="run table to write: FILE.csv, or a folder for runs.csv + design.json "
                    "(then `causalloc analyze DIR` needs no column flags)")
    ou.add_argument("--metric", metavar="M1,M2",
                    help="metrics design.json lists (default: those with a default SESOI)")
    ou.add_argument("--condition-from", required=True, metavar="KEY_OR_REGEX",
                    help="config key (key:A.B) or run-name regex (regex:PATTERN) for the "
                    "condition; without a prefix a key if every config has it, else a regex")
    ou.add_argument("--block", action="append", metavar="NAME=KEY",
                    help="extra block column from a config key (repeatable, comma lists)")
    ou.add_argument("--force", action="store_true", help="replace an existing --out file")
    ou.add_argument("--json", action="store_true", help="print the table as JSON records")
    ou.set_defaults(func=handler)
    csv = kinds.add_parser("csv", help="any CSV, columns renamed with --map",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    csv.add_argument("source", metavar="CSV")
    csv.add_argument("--map", required=True, action="append", metavar="NEW=OLD",
                     help="rename column OLD to NEW (repeatable, comma lists)")
    csv.add_argument("--out", required=True, metavar="CSV", help="run table to write")
    csv.add_argument("--force", action="store_true", help="replace an existing --out file")
    csv.add_argument("--json", action="store_true", help="print the table as JSON records")
    csv.set_defaults(func=handler)


def parse_map(items: list[str]) -> dict[str, str]:
    """['seed=Seed,condition=mask'] -> {'seed': 'Seed', 'condition': 'mask'}."""
    from causalloc.errors import SpecError

    mapping = {}
    for part in filter(None, (p.strip() for item in items for p in item.split(","))):
        new, sep, old = part.partition("=")
        if not sep or not new.strip() or not old.strip():
            raise SpecError(f"--map: expected NEW=OLD, got {part!r}")
        mapping[new.strip()] = old.strip()
    return mapping


def handler(args) -> int:
    from causalloc.importers import open_unlearning as ou
    from causalloc.stats.analyze import command_line

    design = blocks = None
    if args.kind == "csv":
        frame = ou.map_columns(args.source, parse_map(args.map))
    else:
        blocks = ou.parse_blocks(args.block)
        frame = ou.import_runs(args.dirs, args.condition_from, blocks)
        metrics = [m.strip() for m in args.metric.split(",")] if args.metric else None
        if not args.out.lower().endswith(".csv"):
            design = ou.design_manifest(frame, blocks, metrics, command_line())
    out = ou.write_table(frame, args.out, force=args.force, design=design)
    if args.json:
        print(frame.to_json(orient="records"))
        return 0
    done = int((frame["status"] == "done").sum()) if "status" in frame else len(frame)
    print(f"wrote {out}: {len(frame)} run(s), {done} done")
    if blocks:
        conditions = sorted(frame["condition"].astype(str).unique())
        print(f"conditions: {conditions}")
        flags = "" if design else (f" --block {','.join(blocks)} --condition condition "
                                   "--metric METRICS")
        print(f"next: causalloc analyze {out.parent if design else out}{flags} --out analysis/")
    return 0
