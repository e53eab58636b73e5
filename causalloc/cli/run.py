"""``causalloc run SPEC --out DIR``: execute a matched design, resumably."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from causalloc.errors import SpecError

DESCRIPTION = """Expand an experiment spec (TOML) into matched blocks x conditions and run every
run not done yet: local worker processes or Ray tasks, results in DIR/runs.sqlite (resumable:
kill it at any time and run the same command again). Writes DIR/design.json, DIR/spec.toml and
DIR/runs.csv. Exit status 1 if any run of the design has failed."""

EPILOG = """examples:
  causalloc run analyses/example_tiny.toml --out runs/tiny --workers 2
  causalloc run analyses/example_tiny.toml --out runs/tiny --retry-failed
  causalloc run analyses/localization_methods.toml --out runs/loc --workers 2 --save-masks
  causalloc run analyses/example_tiny.toml --out runs/tiny --backend ray --address auto
  causalloc run analyses/example_tiny.toml --out runs/tiny --backend ray --address HEAD_IP:6379 --gpus-per-run 1
  causalloc run analyses/example_tiny.toml --out runs/tiny --json > summary.json
  causalloc run analyses/example_tiny.toml --out runs/tiny --until-conclusive --look-every 4 --max-blocks 24
  causalloc run analyses/smollm2_robust.toml --out runs/smol --until-conclusive --analysis analyses/smollm2_robust.analysis.toml

Before running, a warning names every family of the default analysis that cannot reject at
the spec's size (see causalloc plan). --until-conclusive runs the spec's seeds, then adds
seeds in waves of --look-every (the next integers after the largest seed) and analyses
group-sequentially (causalloc analyze --sequential; the default analysis of the spec's first
metric, or the --analysis spec) after each wave, until every primary comparison is decided or
--max-blocks seeds have run; the store keeps every run, and the seeds ascend in the order
they were added.
"""

MODEL_EPILOG = """
model, precision and device come from the spec's [testbed] table (see analyses/example_tiny.toml):
  [testbed]
  kind = "hf"                                  # any HF causal LM with a value-vector adapter
  model = "meta-llama/Llama-3.1-8B-Instruct"   # a hub id, or a directory (relative to the spec)
  dtype = "bfloat16"                           # float32 | bfloat16 | float16
  device = "auto"                              # auto (CUDA when present) | cpu | cuda | cuda:N
  run_dtype = "bfloat16"                       # runs in this precision (default: dtype); in the run ids
  batch_size = 4                               # testbed build: micro-batch,
  grad_accum = 4                               #   micro-batches per optimizer step,
  gradient_checkpointing = true                #   activation recomputation
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a matched design from an experiment spec", description=DESCRIPTION,
        epilog=EPILOG + MODEL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help="experiment spec (TOML)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="local worker processes (0 = in this process); with Ray, the "
                             "least number of tasks in flight (default: 1)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local worker processes (default) or Ray tasks")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address (e.g. auto, ray://host:10001); default: "
                             "start a local Ray runtime")
    parser.add_argument("--gpus-per-run", type=float, metavar="G",
                        help="GPUs each Ray task requests (fractions share a GPU; default: the "
                             "spec's [execution] gpus_per_run, else 0); refused before anything "
                             "is submitted if no node has G GPUs")
    parser.add_argument("--retries", type=int, default=1, metavar="N",
                        help="submit a run lost with its worker process or Ray node again, up "
                             "to N times (default: 1); attempts are recorded")
    parser.add_argument("--threads-per-worker", type=int, metavar="T",
                        help="torch threads per worker (default: CPUs / workers; 1 on Ray)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed runs again (they are kept and skipped otherwise)")
    parser.add_argument("--save-masks", action="store_true",
                        help="also save V_tgt and the first block's mask of every condition in "
                             "DIR/masks (for the report's mask-anatomy figure and localization-"
                             "accuracy table)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--until-conclusive", action="store_true",
                        help="add seeds in waves until every primary comparison is decided "
                             "(group-sequential analysis) or --max-blocks is reached")
    parser.add_argument("--analysis", metavar="FILE",
                        help="analysis spec whose primary family decides --until-conclusive "
                             "(its comparisons, families, SESOIs; its [sequential] table gives "
                             "the defaults of --look-every and --max-blocks); default: the "
                             "default analysis of the spec's first metric")
    parser.add_argument("--look-every", type=int, metavar="N",
                        help="seeds per wave with --until-conclusive (default: the analysis "
                             "spec's, else the spec's number of seeds)")
    parser.add_argument("--max-blocks", type=int, metavar="M",
                        help="most seeds with --until-conclusive (default: the analysis "
                             "spec's, else 6 waves)")
    parser.add_argument("--run-fn", metavar="MODULE:FUNCTION", help=argparse.SUPPRESS)
    parser.set_defaults(func=handle)


def _warn_cannot_reject(spec_path: str, analysis_path: str | None) -> None:
    """Print causalloc plan's warning for each family that cannot reject (never fatal), of the
    ``--analysis`` spec when given."""
    from causalloc.cli.plan import warn_families
    from causalloc.errors import CausallocError
    from causalloc.stats.spec import load_spec as load_analysis_spec

    try:
        warn_families(spec_path, load_analysis_spec(analysis_path) if analysis_path else None)
    except CausallocError as exc:
        print(f"warning: could not plan the analysis of {spec_path}: {exc}", file=sys.stderr)


def _stored_seeds(out) -> set[int]:
    """Seeds of the runs already in ``out`` (an earlier --until-conclusive call's waves), so
    that running the same command again resumes them instead of calling them foreign."""
    from pathlib import Path

    from causalloc.runs.store import DB_NAME, RunStore

    if not (Path(out) / DB_NAME).is_file():
        return set()
    with RunStore(out, create=False) as store:
        return {int(row["run"]["seed"]) for row in store.rows()}


def until_conclusive(spec, out, *, look_every: int | None,
                     max_blocks: int | None, analysis=None, stream=None, **options) -> dict:
    """Run the spec's seeds (``spec``: a spec file or a loaded ExperimentSpec), then waves of
    ``look_every`` more seeds (the next integers), analysing group-sequentially after each
    wave, until every primary comparison is decided or ``max_blocks`` seeds have run.
    ``analysis`` (an AnalysisSpec or its file) names the comparisons and the primary family
    (default: the default analysis of the spec's first metric); its ``[sequential]`` table
    gives ``look_every`` and ``max_blocks`` where these are None. Returns the last run
    summary with ``sequential`` added ({seeds, decisions, decided})."""
    import dataclasses

    from causalloc.runs import ExperimentSpec, execute_design, load_spec
    from causalloc.stats import load_runs
    from causalloc.stats.analyze import analyze
    from causalloc.stats.spec import AnalysisSpec
    from causalloc.stats.spec import load_spec as load_analysis_spec
    from causalloc.vocab import is_primary_family

    spec = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    if analysis is None:
        analysis = AnalysisSpec(metrics=[spec.eval.metrics[0]])
    elif not isinstance(analysis, AnalysisSpec):
        analysis = load_analysis_spec(analysis)
    # the looks only need the primary family's tests: no pooled models
    analysis = dataclasses.replace(analysis, mixed_model=False, dose_response=False)
    planned = analysis.sequential or {}
    seeds = sorted(set(spec.seeds) | _stored_seeds(out))  # a rerun resumes the earlier waves
    look_every = look_every or planned.get("look_every") or len(seeds)
    max_blocks = max_blocks or planned.get("max_blocks") or 6 * look_every
    if look_every < 1 or max_blocks < look_every:
        raise SpecError(f"--look-every {look_every} / --max-blocks {max_blocks}: need "
                        "1 <= look-every <= max-blocks")
    if len(seeds) > max_blocks:
        raise SpecError(f"--max-blocks {max_blocks}: the spec and the runs in {out} already "
                        f"have {len(seeds)} seeds")
    while True:
        target = min(max_blocks, -(-len(seeds) // look_every) * look_every)
        seeds += list(range(max(seeds) + 1, max(seeds) + 1 + target - len(seeds)))
        summary = execute_design(dataclasses.replace(spec, seeds=tuple(seeds)), out, **options)
        result = analyze(load_runs(out), analysis,
                         sequential={"look_every": look_every, "max_blocks": max_blocks})
        rows = result.comparisons[result.comparisons["family"].map(is_primary_family)]
        if rows.empty:
            raise SpecError("--until-conclusive: the analysis has no primary comparison (a "
                            "family named 'primary' or 'primary: <label>'), so no look can "
                            "decide; the runs made are kept")
        decisions = {row["id"]: row["sequential"]["decision"] for _, row in rows.iterrows()}
        decided = all(d not in ("continue", "inconclusive") for d in decisions.values())
        print(f"until-conclusive: {len(seeds)} seeds: " + "; ".join(
            f"{k}: {v}" for k, v in decisions.items()), file=stream or sys.stderr)
        if decided or len(seeds) >= max_blocks or summary["status"]["failed"]:
            summary["sequential"] = {"seeds": seeds, "decisions": decisions, "decided": decided,
                                     "look_every": look_every, "max_blocks": max_blocks}
            return summary
        seeds += list(range(max(seeds) + 1, max(seeds) + 1 + look_every))
        seeds = seeds[:max_blocks]


def handle(args) -> int:
    from causalloc.runs import execute_design
    from causalloc.runs.backends import summary_text

    if args.analysis and not args.until_conclusive:
        raise SpecError("--analysis decides --until-conclusive: give both (causalloc analyze "
                        "--spec analyses a finished store)")
    _warn_cannot_reject(args.spec, args.analysis)
    options = {"workers": args.workers, "backend": args.backend, "address": args.address,
               "retry_failed": args.retry_failed, "run_fn": args.run_fn,
               "threads_per_worker": args.threads_per_worker, "progress": not args.no_progress,
               "gpus_per_run": args.gpus_per_run, "retries": args.retries,
               "command": shlex.join(["causalloc", *sys.argv[1:]])}
    if args.until_conclusive:
        summary = until_conclusive(args.spec, args.out, look_every=args.look_every,
                                   max_blocks=args.max_blocks, analysis=args.analysis,
                                   **options)
    else:
        summary = execute_design(args.spec, args.out, **options)
    if args.save_masks:
        from pathlib import Path

        from causalloc.runs.spec import load_spec
        from causalloc.runs.worker import save_block_masks

        summary["masks"] = [str(p) for p in save_block_masks(load_spec(args.spec), Path(args.out) / "masks")]
    print(json.dumps(summary, indent=2) if args.json else summary_text(summary))
    return 1 if summary["status"]["failed"] else 0
