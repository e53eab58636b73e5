"""``causalloc analyze``: matched-block tests of a run table -> analysis.json + comparisons.csv."""

from __future__ import annotations

import argparse

from causalloc.errors import SpecError

DESCRIPTION = """\
Compare conditions (mask strategies) within matched blocks: exact sign-flip permutation
tests, randomization tests against the K random masks, bootstrap BCa intervals, d_z, TOST
equivalence against a SESOI, Bayes factors, Holm/BH within families, a pooled mixed model
and dose-response regressions. Writes OUT/analysis.json (schema: docs/analysis_json.md)
and OUT/comparisons.csv, and prints a verdict table."""

EPILOG = """\
examples:
  causalloc analyze runs/ --out runs/analysis
  causalloc analyze runs/ --spec analyses/primary.toml --drop-unmatched --out runs/analysis
  causalloc analyze other.csv --block model,algorithm,seed --condition mask \\
      --metric aues,relearn_es --sesoi aues=0.02,relearn_es=0.05 --out analysis/ --json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="test conditions against each other on a run table",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="DIR_OR_CSV",
                        help="causalloc output folder (runs.csv + design.json) or any CSV")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs")
    parser.add_argument("--spec", metavar="FILE", help="analysis spec TOML (comparisons, ...)")
    parser.add_argument("--block", metavar="A,B", help="block columns (CSV input)")
    parser.add_argument("--condition", metavar="COL", help="condition column")
    parser.add_argument("--metric", metavar="M1,M2", help="metric columns to analyse")
    parser.add_argument("--replicate", metavar="COL",
                        help="replicate column among the block columns (default seed)")
    parser.add_argument("--draw", metavar="COL", help="random-draw column (default mask_draw)")
    parser.add_argument("--sesoi", metavar="M=V,...", help="SESOI per metric, metric units")
    parser.add_argument("--drop-unmatched", action="store_true",
                        help="drop blocks missing a condition (listed in the output)")
    parser.add_argument("--nonfinite", choices=("error", "drop"),
                        help="NaN/inf metric values: fail (default) or exclude and list them")
    parser.add_argument("--seed", type=int, help="seed of the resampling generators (default 0)")
    parser.add_argument("--json", action="store_true", help="print analysis.json to stdout")
    parser.set_defaults(func=handler)


def parse_sesoi(text: str) -> dict[str, float]:
    """'aues=0.02,relearn_es=0.05' -> {'aues': 0.02, 'relearn_es': 0.05}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None or not number > 0:
            raise SpecError(f"--sesoi: expected metric=positive number, got {part!r}")
        out[name.strip()] = number
    return out


def handler(args) -> int:
    from causalloc.stats import load_runs, load_spec, write_analysis
    from causalloc.stats.analyze import analyze, cell_label, command_line
    from causalloc.stats.spec import AnalysisSpec

    spec = load_spec(args.spec) if args.spec else AnalysisSpec()
    if args.sesoi:
        spec.sesoi = {**spec.sesoi, **parse_sesoi(args.sesoi)}
    if args.metric:
        spec.metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    if args.drop_unmatched:
        spec.drop_unmatched = True
    if args.nonfinite:
        spec.nonfinite = args.nonfinite
    if args.seed is not None:
        spec.seed = args.seed
    table = load_runs(
        args.source,
        block=args.block,
        condition=args.condition,
        metric=spec.metrics,
        replicate=args.replicate,
        draw=args.draw,
    )
    result = analyze(table, spec, command=command_line())
    paths = write_analysis(result, args.out)
    if args.json:
        print(paths["analysis"].read_text(), end="")
        return 0
    frame = result.comparisons
    print(f"{len(frame)} comparison(s); wrote {paths['analysis']} and {paths['comparisons']}")
    header = f"{'comparison':44} {'cell':28} {'metric':12} {'n':>3} {'mean_diff':>10} "
    print(header + f"{'p_perm':>8} {'p_adj':>8} {'tost_p':>8}  verdict")
    for row in frame.itertuples():
        needed = f" (blocks needed: {int(row.blocks_needed)})" if row.blocks_needed > 0 else ""
        print(
            f"{(row.a + ' vs ' + row.b)[:44]:44} {cell_label(row.cell)[:28]:28} "
            f"{row.metric[:12]:12} {row.n_blocks:>3} {row.mean_diff:>10.4g} {row.p_perm:>8.4g} "
            f"{row.p_adj:>8.4g} {row.tost_p:>8.4g}  {row.verdict}{needed}"
        )
    for key in ("dropped_blocks", "excluded_runs", "failed_runs"):
        if result.meta[key]:
            print(f"{key}: {len(result.meta[key])} (listed in analysis.json)")
    for message in result.meta["warnings"]:
        print(f"warning: {message}")
    return 0
