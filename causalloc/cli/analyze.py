"""``causalloc analyze``: matched-block tests of a run table -> analysis.json + comparisons.csv."""

from __future__ import annotations

import argparse
import sys

from causalloc.errors import SpecError

DESCRIPTION = """\
Compare conditions (mask strategies) within matched blocks: exact sign-flip permutation
tests, randomization tests against the K random masks (the verdict test when K >= 2),
bootstrap BCa intervals, d_z, TOST equivalence against a SESOI, Bayes factors, Holm/BH
within declared families (primary: every attributed condition vs random across all cells
of the primary metric; controls and other metrics in their own families), a pooled mixed
model and dose-response regressions. Writes OUT/analysis.json (schema:
docs/analysis_json.md) and OUT/comparisons.csv, and prints a verdict table."""

EPILOG = """\
examples:
  causalloc analyze runs/ --out runs/analysis
  causalloc analyze runs/ --spec analyses/primary.toml --drop-unmatched --out runs/analysis
  causalloc analyze other.csv --block model,algorithm,seed --condition mask \\
      --metric aues,relearn_es --sesoi aues=0.02,relearn_es=0.05 --out analysis/ --json
  causalloc analyze runs.csv --block algorithm,seed --metric relearn_es --sesoi 0.05 \
      --direction lower --out analysis/
  causalloc analyze runs/ --primary attributed:activations --primary-metric aues \
      --direction relearn_es=lower --family-split model --out runs/analysis
  causalloc analyze runs/ --sequential --look-every 4 --max-blocks 24 --out runs/analysis
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
    parser.add_argument("--sesoi", metavar="M=V,...",
                        help="SESOI per metric, metric units (a bare V: the only metric)")
    parser.add_argument("--direction", metavar="M=higher|lower,...",
                        help="direction of each metric (a bare higher/lower: the only metric)")
    parser.add_argument("--primary", metavar="C1,C2",
                        help="conditions whose comparisons vs random form the primary family "
                             "(default: the attributed ones)")
    parser.add_argument("--primary-metric", metavar="M",
                        help="metric of the primary family (default: the first metric)")
    parser.add_argument("--family-split", metavar="COL,...",
                        help="cell columns that split every family (e.g. one per model)")
    parser.add_argument("--drop-unmatched", action="store_true",
                        help="drop blocks missing a condition (listed in the output)")
    parser.add_argument("--nonfinite", choices=("error", "drop"),
                        help="NaN/inf metric values: fail (default) or exclude and list them")
    parser.add_argument("--seed", type=int, help="seed of the resampling generators (default 0)")
    parser.add_argument("--sequential", action="store_true",
                        help="group-sequential analysis: blocks in ascending replicate order, "
                             "a look every --look-every blocks, each comparison stopped at its "
                             "first conclusive look (alpha spending; see "
                             "causalloc.stats.sequential); on by default when the analysis "
                             "spec has a [sequential] table")
    parser.add_argument("--look-every", type=int, metavar="N",
                        help="blocks between looks (with --sequential; required unless the "
                             "spec's [sequential] table gives it)")
    parser.add_argument("--max-blocks", type=int, metavar="M",
                        help="planned largest number of blocks (with --sequential; default: "
                             "the spec's [sequential] max_blocks, else the blocks in the "
                             "table, i.e. the table is the whole design)")
    parser.add_argument("--json", action="store_true", help="print analysis.json to stdout")
    parser.set_defaults(func=handler)


#: key of a value given without a metric name ("--sesoi 0.02"), resolved to the only metric
ONLY_METRIC = ""


def _positive(text: str):
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number > 0 else None


def _direction(text: str):
    return {"higher": True, "lower": False}.get(text.strip().lower())


def parse_metric_values(text: str, option: str, convert, expected: str) -> dict:
    """'aues=0.02,relearn_es=0.05' -> {'aues': 0.02, ...}; a bare value -> {ONLY_METRIC: v}."""
    out = {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for part in parts:
        name, sep, value = part.rpartition("=") if "=" in part else ("", "", part)
        converted = convert(value)
        if converted is None or (sep and not name.strip()) or (not sep and len(parts) > 1):
            raise SpecError(f"{option}: expected metric={expected} (or one bare {expected} "
                            f"for a single metric), got {part!r}")
        out[name.strip()] = converted
    return out


def parse_sesoi(text: str) -> dict[str, float]:
    """'aues=0.02,relearn_es=0.05' -> {'aues': 0.02, 'relearn_es': 0.05}; '0.02' -> {'': 0.02}."""
    return parse_metric_values(text, "--sesoi", _positive, "positive number")


def resolve_only_metric(values: dict, metrics: list[str], option: str) -> dict:
    """Give a bare value (key ONLY_METRIC) to the only analysed metric; an error otherwise."""
    if ONLY_METRIC not in values:
        return values
    if len(metrics) != 1:
        raise SpecError(f"{option}: a value without a metric name needs exactly one metric, "
                        f"the table has {metrics}: write {option} METRIC=VALUE")
    rest = {k: v for k, v in values.items() if k != ONLY_METRIC}
    return {**rest, metrics[0]: values[ONLY_METRIC]}


def _fmt_p(value) -> str:
    """A p-value with 4 significant digits; '-' when null (e.g. no TOST)."""
    import math

    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):.4g}"


def verdict_table(frame) -> str:
    """The printed verdict table: full condition and cell labels (never truncated, so that
    distinct cells never look alike), the verdict test's p, adjusted p's and the family."""
    import pandas as pd

    from causalloc.stats.analyze import VERDICT_P
    from causalloc.vocab import cell_label

    needed = frame["blocks_needed"].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    p_verdict = [row[VERDICT_P[row["verdict_test"]]] for _, row in frame.iterrows()]
    shown = pd.DataFrame({
        "comparison": frame["a"] + " vs " + frame["b"],
        "cell": frame["cell"].map(lambda cell: cell_label(cell, named=True)),
        "metric": frame["metric"],
        "n": frame["n_blocks"],
        "mean_diff": frame["mean_diff"].map(lambda v: f"{v:.4g}"),
        "test": frame["verdict_test"],
        "p": [_fmt_p(v) for v in p_verdict],
        "p_adj": frame["p_adj"].map(_fmt_p),
        "tost_p_adj": frame["tost_p_adj"].map(_fmt_p),
        "family": frame["family"],
        "verdict": frame["verdict"],
        "blocks_needed": needed,
    })
    text_columns = ("comparison", "cell", "metric", "test", "family", "verdict")
    formatters = {c: f"{{:<{shown[c].str.len().max()}}}".format for c in text_columns}
    return shown.to_string(index=False, justify="left", formatters=formatters)


def sequential_settings(from_spec: dict | None, flag: bool, look_every: int | None,
                        max_blocks: int | None) -> dict | None:
    """The group-sequential settings of an analysis: the spec's ``[sequential]`` table, with
    ``--look-every`` / ``--max-blocks`` taking precedence; ``--sequential`` turns it on for a
    spec without that table (``--look-every`` then required). None: a fixed-sample analysis."""
    if not (flag or from_spec):
        if look_every or max_blocks:
            raise SpecError("--look-every / --max-blocks need --sequential (or a [sequential] "
                            "table in the analysis spec)")
        return None
    settings = dict(from_spec or {"look_every": None, "max_blocks": None})
    if look_every is not None:
        settings["look_every"] = look_every
    if max_blocks is not None:
        settings["max_blocks"] = max_blocks
    if not settings["look_every"] or settings["look_every"] < 1:
        raise SpecError("--sequential needs --look-every N (N >= 1 blocks between looks)")
    if settings["max_blocks"] is not None and settings["max_blocks"] < settings["look_every"]:
        raise SpecError(f"--max-blocks {settings['max_blocks']}: fewer than --look-every "
                        f"{settings['look_every']}")
    return settings


def handler(args) -> int:
    from causalloc.stats import load_runs, load_spec, write_analysis
    from causalloc.stats.analyze import analyze, command_line
    from causalloc.stats.spec import AnalysisSpec

    spec = load_spec(args.spec) if args.spec else AnalysisSpec()
    if args.metric:
        metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
        if len(set(metrics)) < len(metrics):
            print(f"warning: --metric {args.metric}: duplicates analysed once", file=sys.stderr)
        spec.metrics = list(dict.fromkeys(metrics))
    if args.primary:
        spec.primary = [c.strip() for c in args.primary.split(",") if c.strip()]
    if args.primary_metric:
        spec.primary_metric = args.primary_metric
    if args.family_split:
        spec.family_split = [c.strip() for c in args.family_split.split(",") if c.strip()]
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
    metrics = spec.metrics or table.metrics
    if args.sesoi:
        spec.sesoi = {**spec.sesoi,
                      **resolve_only_metric(parse_sesoi(args.sesoi), metrics, "--sesoi")}
    if args.direction:
        given = parse_metric_values(args.direction, "--direction", _direction, "higher|lower")
        spec.higher_is_better = {**spec.higher_is_better,
                                 **resolve_only_metric(given, metrics, "--direction")}
    sequential = sequential_settings(spec.sequential, args.sequential, args.look_every,
                                     args.max_blocks)
    result = analyze(table, spec, command=command_line(), sequential=sequential)
    paths = write_analysis(result, args.out)
    if args.json:
        print(paths["analysis"].read_text(), end="")
        return 0
    frame = result.comparisons
    print(f"{len(frame)} comparison(s); wrote {paths['analysis']} and {paths['comparisons']}")
    print(verdict_table(frame))
    for family in result.meta["families"]:
        print(f"family {family['name']} ({family['role']}, {family['n_comparisons']} "
              f"comparisons): controls the {family['controls']}")
    for key in ("dropped_blocks", "excluded_runs", "failed_runs"):
        if result.meta[key]:
            print(f"{key}: {len(result.meta[key])} (listed in analysis.json)")
    for message in result.meta["warnings"]:
        print(f"warning: {message}")
    return 0
