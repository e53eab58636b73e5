"""``causalloc audit``: what published figures and matched runs say about published claims."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Audit the claims of a claims file (YAML, schema in docs/claims.md). From the published
figures alone: Welch t, the paired t implied by a per-seed |Delta| column, TOST at the
claim's SESOI and the smallest equivalence margin each supports, the minimal detectable
effect at 80% power, which tests could have produced the reported p (rounding of the
figures propagated as intervals) and a verdict (supported / contradicted / not_determined).
With --runs, `causalloc analyze` on the same contrast and metric. Writes OUT/audit.json,
OUT/audit.md, OUT/audit.html and OUT/figures/forest_<metric>.{png,pdf}."""

EPILOG = """\
examples:
  causalloc audit data/claims/lee2025.yaml --out audit/
  causalloc audit data/claims/lee2025.yaml --runs runs/lee2025 --out audit/
  causalloc audit data/claims/lacuna2026.yaml --runs ou_runs.csv \\
      --block model,forget_split,trainer,seed --condition condition --out audit/ --json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit", help="audit published claims from their figures and matched runs",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claims", metavar="CLAIMS", help="claims YAML file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs")
    parser.add_argument("--runs", metavar="DIR_OR_CSV",
                        help="causalloc run folder or run-table CSV with matched runs")
    parser.add_argument("--block", metavar="A,B", help="block columns of a CSV run table")
    parser.add_argument("--condition", metavar="COL", help="condition column of the run table")
    parser.add_argument("--replicate", metavar="COL", help="replicate column (default seed)")
    parser.add_argument("--alpha", type=float, default=0.05, help="test level (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of analyze's resampling")
    parser.add_argument("--json", action="store_true", help="print audit.json to stdout")
    parser.set_defaults(func=handler)


def handler(args) -> int:
    from causalloc.audit import audit_runs, load_claims, write_audit
    from causalloc.errors import SpecError
    from causalloc.stats.analyze import command_line

    if not 0 < args.alpha < 0.5:
        raise SpecError(f"--alpha: must be in (0, 0.5), got {args.alpha}")
    claims = load_claims(args.claims)
    runs = None
    if args.runs:
        runs = audit_runs(claims, args.runs, block=args.block, condition=args.condition,
                          replicate=args.replicate, seed=args.seed)
    paths = write_audit(claims, args.claims, args.out, runs=runs, runs_source=args.runs,
                        command=command_line(), alpha=args.alpha)
    if args.json:
        print(paths["json"].read_text(), end="")
        return 0
    import json

    document = json.loads(paths["json"].read_text())
    print(f"{len(document['claims'])} claim(s); wrote {paths['json']}, {paths['md']}, "
          f"{paths['html']}")
    print(f"{'claim':34} {'welch_p':>8} {'paired_p':>8} {'margin_W':>9} {'margin_P':>9}  "
          f"{'figures':15} {'runs':15} verdict")
    for e in document["claims"]:
        cells = [_num(e["welch_p"]), _num(e["paired_p"]), _num(e["tost_margin_min_welch"], 9),
                 _num(e["tost_margin_min_paired"], 9)]
        print(f"{e['id'][:34]:34} {' '.join(cells)}  {e['verdict_published']:15} "
              f"{e['verdict_runs'] or '-':15} {e['verdict']}")
    return 0


def _num(value, width: int = 8) -> str:
    return f"{value:>{width}.3g}" if value is not None else f"{'-':>{width}}"
