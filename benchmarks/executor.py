"""Executor speed, measured side by side: causalloc's executor vs two naive references.

The same matched design (one block: the ``oracle`` mask and ``runs - 1`` draws of
``random``, 4 runs by default; objective NPO, which has a frozen reference model) runs
three times:

(a) causalloc: ``execute_design`` in-process (``workers=0``): one loaded theta_o per worker
    shared as the frozen reference (its outputs memoised per example within the block),
    trainable masked columns attached by hooks, logits computed at the scored positions
    only (:mod:`causalloc.models.positions`), one teacher-forced pass over forget + retain
    for ES (theta_o's step-0 scores and theta_r's read from the testbed's record,
    ``item_es.json``), malloc keeping freed memory
    (``causalloc.runs.backends.keep_freed_memory``), the run store written run by run. It
    runs in a fresh spawned process, so that ``peak_rss_mb`` (``resource.getrusage``
    maxrss) is its own.
(b) naive (the default reference, ``ratio``): :mod:`naive_reference` in this process, as
    open-unlearning runs an experiment: one run at a time, the model loaded per run and the
    reference model deep-copied from it, full-vocabulary logits at every position, full
    backward with masked gradients and the optimizer over all parameters, ES from one
    teacher-forced pass per batch.
(c) naive_generate_es (``ratio_generate_es``): (b) with ES by greedy generation from every
    answer prefix; slow, so by default only the first repeat runs it
    (``--generate-es-repeats``).

Same testbed, data, steps, batch size, optimizer, clipping and evaluation schedule; all
use ``--threads`` torch threads, and each process pays transformers' first-load costs
before the clock starts (:func:`warm_imports`). Printed: runs/hour of each, ``ratio`` =
causalloc / naive runs per hour (whole runs: setup, training, evaluation),
``ratio_generate_es`` the same against (c), ``ratio_train`` = naive / causalloc seconds
spent in the unlearning steps alone (no evaluation, no loading), and ``ratio_cpu`` /
``ratio_generate_es_cpu`` the whole-design ratios of CPU time (``time.process_time``) of
the part's process instead of wall time: with one torch thread per path, that is the
runs/hour ratio on an idle core, far less moved than wall time by what else the machine
runs. All paths should
agree on the metrics: the initial ES exactly (one-pass ES equals ES by generation), the
final ones up to float rounding of the different training computations. ``--repeats N``
runs the paths N times, alternating the order (ABBA...), and reports medians with the
per-repeat values and the machine's load average: on a shared machine whose speed drifts,
one pass of each is a noisy ratio.

    python benchmarks/executor.py                      # tiny testbed, 4 runs of NPO
    python benchmarks/executor.py --json --runs 4 --steps 20 --repeats 5
    python benchmarks/executor.py --model smollm2 --steps 4 --runs 2 --threads 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

METRICS = ["aues", "fs_at_rs95", "fs_final", "rs_final", "es_forget_final", "es_retain_final"]
#: metrics compared between the two paths in the report
COMPARED = ("aues", "fs_final", "rs_final")


def design(args) -> dict:
    """The spec table of the benchmarked design (validated by ``causalloc.runs.parse_spec``)."""
    from causalloc.cli.testbed import parse_overrides

    testbed = {"kind": args.model, "build": parse_overrides(args.set), **testbed_sizes(args)}
    conditions = [{"strategy": "oracle"}] + ([{"strategy": "random"}] if args.runs > 1 else [])
    return {
        "name": "executor-benchmark", "testbed": testbed, "budgets": [args.budget], "seeds": [args.seed],
        "k_random": max(1, args.runs - 1), "conditions": conditions,
        "algorithms": [{"name": args.objective, "steps": args.steps, "lr": args.lr,
                        "batch_size": args.batch_size, "optimizer": args.optimizer}],
        "eval": {"every": args.eval_every, "metrics": METRICS},
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_imports(testbed_path: str) -> None:
    """Pay, untimed, what both paths pay once per process on their first run: the lazy
    imports (the model class of the testbed's architecture, scipy.stats via the metrics)
    and transformers' first ``from_pretrained`` (it compiles about a thousand regular
    expressions of its checkpoint-conversion tables, seconds on a loaded machine). The
    causalloc part runs in a fresh process and the naive ones in this one, so without this
    the first part of each repeat would pay it and the other not; a worker process pays it
    once, however many runs it executes."""
    import naive_reference  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import causalloc.runs.worker  # noqa: F401

    AutoModelForCausalLM.from_pretrained(Path(testbed_path) / "theta_o")
    AutoTokenizer.from_pretrained(Path(testbed_path) / "tokenizer")


def causalloc_part(spec_table: dict, threads: int, testbed_path: str) -> dict:
    """Run the design with causalloc's executor in this (fresh) process; per-run results."""
    import torch

    from causalloc.runs import RunStore, execute_design, parse_spec

    torch.set_num_threads(threads)
    warm_imports(testbed_path)
    spec = parse_spec(spec_table, source="benchmarks/executor.py")
    with tempfile.TemporaryDirectory(prefix="causalloc-bench-") as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = execute_design(spec, out, workers=0, progress=False, command="benchmarks/executor.py")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        with RunStore(out, create=False) as store:
            rows = store.rows()
    failed = [r["error"] for r in rows if r["status"] != "done"]
    if failed:
        raise RuntimeError(f"causalloc runs failed: {failed[0]}")
    runs = [{"run_id": r["run_id"], "metrics": r["metrics"], "trajectory": r["trajectory"],
             "max_abs_change_outside_mask": r["max_abs_change_outside_mask"], "timings": r["timings"]}
            for r in rows]
    return {"wall_seconds": wall, "cpu_seconds": cpu, "runs": runs, "done": summary["done"],
            "peak_rss_mb": peak_rss_mb()}


def naive_part(spec_table: dict, threads: int, testbed_path: str, es: str) -> dict:
    """Run the design with the naive reference (ES measured by ``es``), one run at a time
    in this process."""
    import torch
    from naive_reference import naive_run

    from causalloc.runs import expand, parse_spec

    torch.set_num_threads(threads)
    warm_imports(testbed_path)
    runs = expand(parse_spec(spec_table, source="benchmarks/executor.py"))
    start, cpu_start = time.perf_counter(), time.process_time()
    results = [{"run_id": run["run_id"], **naive_run(run, es)} for run in runs]
    return {"wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "runs": results}


def prepare_testbed(spec_table: dict) -> str:
    """Build (or find cached) the design's testbed before anything is timed."""
    from causalloc.runs import expand, parse_spec
    from causalloc.runs.worker import testbed_config
    from causalloc.testbed import build_testbed

    run = expand(parse_spec(spec_table, source="benchmarks/executor.py"))[0]
    return str(build_testbed(testbed_config(run["testbed"]), progress=True).path)


def _sum(part: dict, phase: str) -> float:
    return sum(run["timings"][phase] for run in part["runs"])


#: the paths of one repeat: name -> the naive reference's ES method (None: causalloc)
PATHS = {"causalloc": None, "naive": "one_pass", "naive_generate_es": "generate"}


def compare(parts: dict[str, dict]) -> dict:
    """Speed figures of one repeat and the agreement of each naive path's metrics with
    causalloc's, run by run (``parts``: path name -> its part; ``naive_generate_es`` may be
    absent)."""
    fast = parts["causalloc"]
    n_runs = len(fast["runs"])
    per_hour = {name: 3600.0 * n_runs / part["wall_seconds"] for name, part in parts.items()}
    runs, differences = [], []
    for run in fast["runs"]:
        others = {name: next(r for r in part["runs"] if r["run_id"] == run["run_id"])
                  for name, part in parts.items() if name != "causalloc"}
        for other in others.values():
            differences += [abs(run["metrics"][k] - other["metrics"][k]) for k in COMPARED]
        runs.append({"run_id": run["run_id"][:12],
                     **{name: {k: r["metrics"][k] for k in COMPARED} for name, r in [("causalloc", run), *others.items()]},
                     "initial_es_equal": all(run["trajectory"][0] == o["trajectory"][0] for o in others.values()),
                     "max_abs_change_outside_mask": [run["max_abs_change_outside_mask"],
                                                     *(o["max_abs_change_outside_mask"] for o in others.values())]})
    figures = {f"runs_per_hour_{name}": value for name, value in per_hour.items()}
    for suffix, reference in (("", "naive"), ("_generate_es", "naive_generate_es")):
        if reference in parts:
            figures[f"ratio{suffix}"] = per_hour["causalloc"] / per_hour[reference]
            figures[f"ratio{suffix}_cpu"] = parts[reference]["cpu_seconds"] / fast["cpu_seconds"]
    return {
        **figures,
        "ratio_train": _sum(parts["naive"], "train") / _sum(fast, "train"),
        "peak_rss_mb": fast["peak_rss_mb"],
        "seconds": {name: {"wall": part["wall_seconds"], "cpu": part["cpu_seconds"], **{phase: _sum(part, phase) for phase in
                                                          ("setup", "train", "eval")}}
                    for name, part in parts.items()},
        "initial_es_equal": all(r["initial_es_equal"] for r in runs),
        "max_abs_metric_difference": max(differences),
        "runs": runs,
    }


def add_testbed_arguments(parser: argparse.ArgumentParser) -> None:
    """The testbed size and builder options shared by the benchmarks."""
    parser.add_argument("--authors", type=int, help="testbed n_authors")
    parser.add_argument("--forget-authors", type=int, help="testbed n_forget_authors")
    parser.add_argument("--questions", type=int, help="testbed n_questions")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="testbed builder override (testbed.build), repeatable")


def testbed_sizes(args: argparse.Namespace) -> dict:
    """The TestbedConfig size fields given on the command line."""
    given = (("n_authors", args.authors), ("n_forget_authors", args.forget_authors), ("n_questions", args.questions))
    return {key: value for key, value in given if value is not None}


def tiny_testbed_state(args: argparse.Namespace):
    """The worker's shared state (theta_o, data, scoring batches) of the tiny testbed that the
    command line describes (:func:`add_testbed_arguments`), built or taken from the cache."""
    from causalloc.cli.testbed import parse_overrides
    from causalloc.runs.worker import TestbedState
    from causalloc.testbed import build_testbed, config_for

    config = config_for("tiny", **testbed_sizes(args), **parse_overrides(args.set))
    testbed = build_testbed(config, progress=True)
    return TestbedState(testbed, testbed.config.max_length)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Runs/hour of causalloc's executor vs a naive masked-unlearning reference on "
                    "the same matched design.", epilog=__doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny", help="testbed kind")
    parser.add_argument("--runs", type=int, default=4, help="runs in the block: oracle + runs-1 random draws")
    parser.add_argument("--steps", type=int, default=20, help="unlearning steps per run")
    parser.add_argument("--eval-every", type=int, default=10, help="ES evaluation every N steps")
    parser.add_argument("--objective", default="npo", help="unlearning objective (default npo)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--budget", type=float, default=0.1, help="mask budget")
    parser.add_argument("--seed", type=int, default=0, help="replicate seed of the block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both paths")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the paths this many times, alternating which goes first; the "
                             "speed figures are medians (this machine's speed drifts by 10-30%%)")
    parser.add_argument("--generate-es-repeats", type=int, default=1,
                        help="how many of the repeats (the first ones) also run the reference with "
                             "ES by generation (slow: about 18 times causalloc's time); 0 skips it")
    add_testbed_arguments(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--runs, --steps and --repeats must be >= 1")
    if not 0 <= args.generate_es_repeats <= args.repeats:
        parser.error("--generate-es-repeats must lie in [0, --repeats]")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    spec_table = design(args)
    testbed_path = prepare_testbed(spec_table)
    rounds = []
    for repeat in range(args.repeats):
        names = [name for name in PATHS if name != "naive_generate_es" or repeat < args.generate_es_repeats]
        # alternate the order (ABBA...) so that a machine slowly getting faster or slower
        # does not favour the path that always runs first
        order = names if repeat % 2 == 0 else names[::-1]
        parts = {name: run_part(name, spec_table, args.threads, testbed_path) for name in order}
        rounds.append(compare({name: parts[name] for name in names}))
    report = {**summarise(rounds),
              "settings": {**{k: v for k, v in vars(args).items() if k != "json"},
                           "testbed_path": testbed_path, "metrics": METRICS, "load": load_average()}}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
    return report


def load_average() -> dict:
    """The machine's load (1, 5 and 15 minute averages) and CPU count at the end of the run:
    timings on a shared machine are only comparable under similar load."""
    import os

    one, five, fifteen = os.getloadavg()
    return {"1min": one, "5min": five, "15min": fifteen, "cpus": os.cpu_count()}


def run_part(name: str, spec_table: dict, threads: int, testbed_path: str) -> dict:
    """One path over the whole design: causalloc in a fresh spawned process (its own peak
    RSS), the naive references in this process."""
    if PATHS[name] is not None:
        return naive_part(spec_table, threads, testbed_path, PATHS[name])
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(causalloc_part, spec_table, threads, testbed_path).result()


#: per-repeat figures summarised by their median
SPEEDS = ("runs_per_hour_causalloc", "runs_per_hour_naive", "runs_per_hour_naive_generate_es",
          "ratio", "ratio_generate_es", "ratio_train", "ratio_cpu", "ratio_generate_es_cpu")


def summarise(rounds: list[dict]) -> dict:
    """Medians over the repeats of the speed figures (``ratio``, ``ratio_generate_es`` and
    ``ratio_train`` are the medians of the per-repeat ratios, each from passes run back to
    back; the generation-ES figures over the repeats that ran it); agreement and memory over
    all repeats; the runs of the first."""
    def median(values):
        return float(np.median(values))

    names = rounds[0]["seconds"]
    return {
        **{key: median([r[key] for r in rounds if key in r]) for key in SPEEDS if key in rounds[0]},
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
        "seconds": {name: {phase: median([r["seconds"][name][phase] for r in rounds if name in r["seconds"]])
                           for phase in names[name]} for name in names},
        "initial_es_equal": all(r["initial_es_equal"] for r in rounds),
        "max_abs_metric_difference": max(r["max_abs_metric_difference"] for r in rounds),
        "repeats": [{key: r[key] for key in (*SPEEDS, "seconds") if key in r} for r in rounds],
        "runs": rounds[0]["runs"],
    }


def _text(report: dict) -> str:
    s = report["seconds"]
    lines = [
        (f"runs/hour  causalloc {report['runs_per_hour_causalloc']:.0f}   naive (one-pass ES) "
         f"{report['runs_per_hour_naive']:.0f}   ratio {report['ratio']:.2f}"),
        f"CPU-time ratio {report['ratio_cpu']:.2f} (process CPU seconds, naive / causalloc)",
        (f"train-step seconds  causalloc {s['causalloc']['train']:.2f}   naive "
         f"{s['naive']['train']:.2f}   ratio_train {report['ratio_train']:.2f}"),
        f"eval seconds  causalloc {s['causalloc']['eval']:.2f}   naive {s['naive']['eval']:.2f}",
        f"peak RSS of the causalloc part {report['peak_rss_mb']:.0f} MB",
        (f"initial ES equal on all paths: {report['initial_es_equal']}; max |metric difference| "
         f"{report['max_abs_metric_difference']:.3g}"),
    ]
    if "ratio_generate_es" in report:
        lines.insert(1, f"runs/hour  naive (ES by generation) {report['runs_per_hour_naive_generate_es']:.0f}"
                        f"   ratio_generate_es {report['ratio_generate_es']:.2f}")
    if len(report["repeats"]) > 1:
        lines.insert(0, f"medians over {len(report['repeats'])} repeats; per repeat ratio "
                        + ", ".join(f"{r['ratio']:.2f}" for r in report["repeats"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
