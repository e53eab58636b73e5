"""``causalloc plan SPEC``: before any run, can each family reject, and how many blocks."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """Read an experiment spec and say, for each family of hypotheses the analysis
will test: its number of comparisons, the smallest adjusted p its tests can reach at the
spec's number of seeds (exact sign-flip floor 2/2^n, randomization floor 2/(K+1)^n, times
Holm's m), whether any rejection is possible at all (can_reject), the fewest blocks that
would make it possible, and with --pilot the blocks needed to detect a stated effect
(--effect, else the pilot's observed difference) at 80% power, with the range from the
pilot sd's 95% chi-square interval, and to show equivalence at 0. Expected runs and CPU
time (from the pilot's 'seconds' column; 'unknown' without a pilot)."""

EPILOG = """examples:
  causalloc plan analyses/example_tiny.toml
  causalloc plan analyses/localization_methods.toml --analysis-spec analyses/primary.toml --json
  causalloc plan analyses/example_tiny.toml --pilot runs/tiny --effect aues=0.05
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="before running: can each family reject, blocks needed",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help="experiment spec (TOML)")
    parser.add_argument("--analysis-spec", metavar="FILE",
                        help="analysis spec TOML (comparisons, families, SESOI, alpha)")
    parser.add_argument("--pilot", metavar="RUNS",
                        help="pilot run folder or runs.csv: sd of the differences, seconds")
    parser.add_argument("--effect", metavar="M=V,...",
                        help="effect to detect per metric, metric units (default: the pilot's "
                             "observed difference, else the SESOI)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=handler)


def design_plan(spec_path: str, analysis_spec=None, pilot: str | None = None,
                effects: dict | None = None) -> dict:
    """The plan of an experiment spec (see causalloc.stats.plan.plan)."""
    from causalloc.runs.design import block_columns, expand
    from causalloc.runs.spec import load_spec
    from causalloc.stats import load_runs
    from causalloc.stats.plan import design_table, plan

    experiment = load_spec(spec_path)
    runs = expand(experiment)
    design = {"conditions": {c.name: {"kind": c.kind, "reference": c.reference}
                             for c in experiment.conditions},
              "cluster": "testbed" if experiment.testbed.replicated else None}
    table = design_table(runs, block_columns=list(block_columns(experiment)),
                         metrics=list(experiment.eval.metrics), design=design)
    pilot_table = load_runs(pilot) if pilot else None
    seconds = None
    if pilot_table is not None and "seconds" in pilot_table.runs:
        seconds = float(pilot_table.runs["seconds"].astype(float).mean())
    return plan(table, analysis_spec, pilot=pilot_table, effects=effects, n_runs=len(runs),
                seconds_per_run=seconds)


def warn_families(spec_path: str, analysis_spec=None, stream=None) -> None:
    """A warning line per family that cannot reject, of ``analysis_spec`` (an AnalysisSpec)
    or else of the spec's default analysis."""
    for family in design_plan(spec_path, analysis_spec)["families"]:
        if not family["can_reject"]:
            print(f"warning: family {family['name']!r} ({family['n_comparisons']} comparisons) "
                  f"cannot reject at this size: smallest adjusted p {family['min_p_adj']:.3g} "
                  f">= alpha; it needs >= {family['min_blocks_to_reject']} blocks per "
                  "comparison (causalloc plan)", file=stream or sys.stderr)


def handler(args) -> int:
    from causalloc.cli.analyze import _positive, parse_metric_values
    from causalloc.stats import load_spec

    spec = load_spec(args.analysis_spec) if args.analysis_spec else None
    effects = parse_metric_values(args.effect, "--effect", _positive, "positive number") \
        if args.effect else None
    document = design_plan(args.spec, spec, args.pilot, effects)
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    cpu = document["cpu_seconds"]
    print(f"{document['n_runs']} runs; CPU time "
          + (f"{cpu / 3600:.2f} h ({document['seconds_per_run']:.1f} s per pilot run)"
             if cpu is not None else "unknown (give --pilot RUNS with a 'seconds' column)"))
    for family in document["families"]:
        verdict = "can reject" if family["can_reject"] else "CANNOT reject at this size"
        print(f"family {family['name']}: {family['n_comparisons']} comparisons, smallest "
              f"adjusted p {family['min_p_adj']:.3g} ({family['adjust']}) -> {verdict}; "
              f"fewest blocks to reject: {family['min_blocks_to_reject']}")
        if family["blocks_needed_detect"] is not None:
            print(f"  blocks needed (80% power): detect {family['blocks_needed_detect']}, "
                  f"equivalence {family['blocks_needed_equivalence']}")
    for c in document["comparisons"]:
        if c["sd"] is not None:
            lo, hi = c["blocks_needed_detect_range"]
            print(f"  {c['id']}: effect {c['effect']:.4g} ({c['effect_source']}), pilot sd "
                  f"{c['sd']:.4g} [{c['sd_ci95'][0]:.3g}, {c['sd_ci95'][1]:.3g}] -> "
                  f"{c['blocks_needed_detect']} blocks to detect (sd range: {lo}-{hi}), "
                  f"{c['blocks_needed_equivalence']} for equivalence")
    return 0
