"""``causalloc import``: other frameworks' runs -> a causalloc run table (runs.csv)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Turn other frameworks' outputs into a causalloc run table that `causalloc analyze` and
`causalloc audit --runs` read, one row per run, with each metric's direction in an
analysis spec next to it (FILE.analysis.toml, or DIR/analysis.toml; pass it to
`causalloc analyze --spec`) and, for --out DIR, a design.json recording every metric's
scale and direction.
  open-unlearning  run folders (.hydra/config.yaml, evals/TOFU_SUMMARY.json, optional
                   checkpoint-*/evals/); blocks model, forget_split, trainer, seed from the
                   config; records the Truth Ratio aggregator and refuses mixed ones
  muse             muse_bench eval.py CSVs (name, verbmem_f, privleak, knowmem_f,
                   knowmem_r); ROUGE columns /100 to [0, 1], privleak in percent,
                   abs_privleak = |privleak|
  lm-eval          lm-evaluation-harness results_*.json (results[task]["acc,none"]) or
                   open-unlearning LMEval_SUMMARY.json ("<task>/acc"); columns
                   <task>_<metric> (wmdp_bio_acc, wmdp_bio_acc_stderr); WMDP lower is better
  rwku             RWKU forget.json (+ neighbor.json) folders; forget_l1..3_rouge_l_r,
                   neighbor_l1..2_rouge_l_r, per-level probe counts, all-probe means
  csv              any CSV with columns renamed by --map
--condition-from and --block NAME=KEY_OR_REGEX take a key of the run's metadata (key:A.B)
or a regex (regex:PATTERN) searched in the run's name, then its path; the group named like
the column, else group 1, else the whole match is the value. Unprefixed: a key when every
run has it, a regex when none has it."""

EPILOG = """\
examples:
  causalloc import open-unlearning saves/unlearn/ --condition-from 'mask_(?P<condition>\\w+)' \\
      --out runs.csv
  causalloc import open-unlearning run_a run_b --condition-from mask.kind \\
      --block lr=trainer.args.learning_rate --out runs.csv
  causalloc analyze runs.csv --spec runs.analysis.toml --block model,forget_split,trainer,seed \\
      --condition condition --metric forget_quality,model_utility \\
      --sesoi forget_quality=0.05,model_utility=0.02 --out analysis/
  causalloc import muse news.csv --condition-from 'mask_([a-z]+)' --block 'seed=seed(\\d+)' \\
      --block 'algorithm=^(\\w+?)_' --out muse/
  causalloc analyze muse/ --spec muse/analysis.toml \\
      --sesoi knowmem_f=0.02,knowmem_r=0.02,verbmem_f=0.02,abs_privleak=2 --out muse/analysis
  causalloc import lm-eval lm_eval_out/ --condition-from 'mask_([a-z]+)' \\
      --block 'seed=seed(\\d+)' --metric wmdp_bio_acc,mmlu_acc --out wmdp/
  causalloc import lm-eval saves/unlearn/ --condition-from mask.kind \\
      --block seed=trainer.args.seed --out wmdp.csv     # open-unlearning LMEval_SUMMARY.json
  causalloc import rwku results/RWKU/Target/ --condition-from 'mask_([a-z]+)' \\
      --block target=target --block 'seed=seed(\\d+)' --out rwku/
  causalloc import csv theirs.csv --map seed=Seed,condition=mask,aues=AUES --out runs.csv
"""

#: importer kind -> (module under causalloc.importers, what PATH is, help)
KINDS = {
    "open-unlearning": ("open_unlearning", "run folders, or folders to search for run folders",
                        "open-unlearning run folders"),
    "muse": ("muse", "MUSE result CSVs, or folders to search for *.csv", "MUSE result CSVs"),
    "lm-eval": ("lm_eval", "results_*.json / LMEval_SUMMARY.json files, or folders to search",
                "lm-evaluation-harness (WMDP, MMLU) results"),
    "rwku": ("rwku", "forget.json files, or folders to search for them", "RWKU result folders"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="read other frameworks' runs into a run table",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (_, paths_help, kind_help) in KINDS.items():
        sub = kinds.add_parser(kind, help=kind_help, description=DESCRIPTION, epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("paths", nargs="+", metavar="PATH", help=paths_help)
        sub.add_argument("--out", required=True, metavar="CSV_OR_DIR",
                         help="run table to write: FILE.csv (+ FILE.analysis.toml), or a "
                         "folder for runs.csv + design.json + analysis.toml (then `causalloc "
                         "analyze DIR --spec DIR/analysis.toml` needs no column flags)")
        sub.add_argument("--metric", metavar="M1,M2",
                         help="metrics design.json lists (default: those with a default "
                         "SESOI, else those with a known direction)")
        sub.add_argument("--condition-from", required=True, metavar="KEY_OR_REGEX",
                         help="key (key:A.B) or run-name/path regex (regex:PATTERN) giving "
                         "the condition; without a prefix a key if every run has it, else a "
                         "regex")
        sub.add_argument("--block", action="append", metavar="NAME=KEY_OR_REGEX",
                         help="block column from a key or a run-name/path regex (repeatable; "
                         "comma lists of keys)")
        sub.add_argument("--force", action="store_true", help="replace existing --out files")
        sub.add_argument("--json", action="store_true", help="print the table as JSON records")
        sub.set_defaults(func=handler)
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
    import importlib

    from causalloc.importers import common
    from causalloc.stats.analyze import command_line

    design = blocks = facts = None
    if args.kind == "csv":
        frame = common.map_columns(args.source, parse_map(args.map))
    else:
        module = importlib.import_module(f"causalloc.importers.{KINDS[args.kind][0]}")
        blocks = common.parse_blocks(args.block, getattr(module, "DEFAULT_BLOCKS", {}))
        frame = module.import_runs(args.paths, args.condition_from, blocks)
        facts = frame.attrs.get("facts", {})
        metrics = [m.strip() for m in args.metric.split(",")] if args.metric else None
        if not args.out.lower().endswith(".csv"):
            design = common.design_manifest(frame, blocks, metrics, command_line(), facts)
    out = common.write_table(frame, args.out, force=args.force, design=design, facts=facts)
    for message in frame.attrs.get("warnings", []):
        print(f"warning: {message}", file=sys.stderr)
    if args.json:
        print(frame.to_json(orient="records"))
        return 0
    done = int((frame["status"] == "done").sum()) if "status" in frame else len(frame)
    print(f"wrote {out}: {len(frame)} run(s), {done} done")
    if blocks is not None:
        conditions = sorted(frame["condition"].astype(str).unique())
        print(f"conditions: {conditions}")
        spec = common.sidecar_paths(args.out)[1]
        flags = "" if design else (f" --block {','.join(blocks) or 'COLUMNS'} --condition "
                                   "condition --metric METRICS")
        print(f"next: causalloc analyze {out.parent if design else out} --spec {spec}{flags} "
              "[--sesoi METRIC=VALUE,...] --out analysis/")
    return 0
