"""GPU run of a whole design spec in bfloat16, checked against float32 on its first block.

``--spec SPEC --out DIR`` loads the spec, sets ``[testbed] run_dtype`` to ``--dtype``
(default bfloat16) and runs every run of its design on ``--device`` (default cuda) into
``DIR/design``, in this process unless ``--workers N`` asks for worker processes. The
testbed is built (or taken from the cache) in its own ``dtype``; the runs load theta_o in
the run dtype. With ``--until-conclusive`` the design grows in waves of seeds until every
primary comparison is decided (:func:`causalloc.cli.run.until_conclusive`, as
``causalloc run --until-conclusive``).

Why bfloat16: on a GPU it halves the memory of the shared theta_o and of every activation,
and its matrix products run on the tensor cores. Why the float32 first block: a bfloat16
run follows another numerical trajectory than a float32 one (every forward rounds to 8
significant bits; docs/models.md), so the spec's first block (first seed, first algorithm,
first budget, with all its conditions, draws and grid points) is run again in float32 into
``DIR/float32-first-block`` and the report says how far AUES, FS@RS95 and the final FS and
RS moved per matched run (same condition, mask draw and grid point). The hard constraint
is exact in any dtype: the largest change outside the mask over all runs must be 0.0.

The report (text, or one JSON object with ``--json``; ``--json-out FILE`` writes it too)
gives the device, the runs done and failed, runs/hour of the design (wall time, testbed
build included), the peak memory of the design (CUDA: ``torch.cuda.max_memory_allocated``;
CPU: the peak RSS of the process or of its largest worker), the agreement, the largest
change outside the mask, the torch version, the spec and its hash, and with
``--until-conclusive`` the sequential decisions.

``run_dtype`` is part of the run ids, so the bfloat16 store is its own. It is left unset
when ``--dtype`` is the testbed's own dtype, and ``[testbed] device`` is set only when
``--device`` differs from where the spec's runs would compute anyway (``auto``: CUDA when
present): a float32 run on the GPU keeps the run ids of a float32 CPU store, so the GPU can
finish a design that the CPU started. Where no CUDA device exists ``--device cuda`` prints
one line saying so and exits 0; ``--device cpu`` runs the same code path on the CPU (the
default test suite runs it on a toy spec).

examples:
  python benchmarks/gpu.py --spec analyses/smollm2_oracle_vs_random.toml --out runs/gpu-smollm2 \\
      --json-out reports/validation/gpu_smollm2.json
  python benchmarks/gpu.py --spec analyses/oracle_vs_random.toml --out runs/gpu-ovr \\
      --until-conclusive --look-every 4 --max-blocks 24
  python benchmarks/gpu.py --spec analyses/smollm2_robust.toml --out runs/gpu-smollm2-robust \\
      --dtype float32 --until-conclusive --analysis analyses/smollm2_robust.analysis.toml
  python benchmarks/gpu.py --spec analyses/example_tiny.toml --out /tmp/gpu-tiny --device cpu --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: run metrics compared between the run dtype and float32 (those of the spec's eval.metrics)
COMPARED = ("aues", "fs_at_rs95", "fs_final", "rs_final")
#: where the float32 rerun of the first block goes, under --out
FLOAT32_FOLDER = "float32-first-block"


def cuda_missing(device: str) -> str | None:
    """Why ``device`` cannot be used (one line), or None when it can."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return ("benchmarks/gpu.py: skipped, no CUDA device here (torch.cuda.is_available() is "
                "False); run it on a GPU machine, or with --device cpu to test the code path")
    return None


def stored_dtype(testbed) -> str:
    """The dtype the spec's testbed is built and stored in (its ``dtype``, a ``build``
    override, or the config default)."""
    from causalloc.runs.worker import testbed_config
    from causalloc.testbed import TestbedConfig

    if testbed.pinned:
        return testbed.dtype or TestbedConfig.dtype
    return testbed_config(testbed.replicates()[0][1]).dtype


def run_settings(spec, dtype: str, device: str) -> dict:
    """The ``[testbed]`` keys to set so the runs compute in ``dtype`` on ``device``: only those
    that change something (``run_dtype`` unless it is the testbed's own dtype, ``device``
    unless the spec's runs would compute there anyway), so that run ids change only then."""
    from causalloc.devices import resolve_device

    settings = {}
    run_dtype = None if dtype == stored_dtype(spec.testbed) else dtype
    if run_dtype != spec.testbed.run_dtype:
        settings["run_dtype"] = run_dtype
    spec_device = spec.testbed.device or "auto"
    if device != (str(resolve_device()) if spec_device == "auto" else spec_device):
        settings["device"] = device
    return settings


def with_testbed(spec, **keys):
    """``spec`` with these ``[testbed]`` keys replaced."""
    return dataclasses.replace(spec, testbed=dataclasses.replace(spec.testbed, **keys))


def first_block(spec):
    """The spec cut to its first block: first seed, first testbed, first algorithm and first
    budget, with every condition, draw and grid point (its runs are those of that block of
    the whole design)."""
    testbed_seed = spec.testbed.replicates()[0][0]
    return dataclasses.replace(
        with_testbed(spec, seeds=None, seed=testbed_seed), seeds=spec.seeds[:1],
        algorithms=spec.algorithms[:1], budgets=spec.budgets[:1])


def done_rows(folder: Path, run_ids: set[str] | None = None) -> list[dict]:
    """The done rows of a store (those of ``run_ids`` only, when given)."""
    from causalloc.runs import RunStore

    with RunStore(folder, create=False) as store:
        return [row for row in store.rows("done") if run_ids is None or row["run_id"] in run_ids]


def match_key(run: dict) -> str:
    """What pairs a run with its float32 twin of the same block: condition, draw, grid point."""
    from causalloc.runs.spec import canonical_json

    return canonical_json([run["condition"], run["mask_draw"], run.get("grid_point", {})])


def agreement(rows: list[dict], float32_rows: list[dict], metrics: list[str]) -> dict:
    """|run dtype - float32| of each metric per matched run, with the max and median over the
    runs per metric and over all (finite differences only; a diverged run's NaN is counted
    as not finite)."""
    twins = {match_key(row["run"]): row for row in float32_rows}
    table, by_metric = [], {metric: [] for metric in metrics}
    for row in rows:
        twin = twins.get(match_key(row["run"]))
        if twin is None:
            continue
        entry = {"condition": row["run"]["condition"], "mask_draw": row["run"]["mask_draw"],
                 "grid_point": row["run"].get("grid_point", {})}
        for metric in metrics:
            value, reference = row["metrics"][metric], twin["metrics"][metric]
            difference = abs(value - reference)
            entry[metric] = {"run": value, "float32": reference, "abs_difference": difference}
            if math.isfinite(difference):
                by_metric[metric].append(difference)
        table.append(entry)
    every = [d for differences in by_metric.values() for d in differences]
    return {
        "metrics": metrics, "matched_runs": len(table), "unmatched_runs": len(rows) - len(table),
        "not_finite": len(table) * len(metrics) - len(every),
        **_max_median(every),
        "by_metric": {metric: _max_median(d) for metric, d in by_metric.items()},
        "runs": table,
    }


def _max_median(values: list[float]) -> dict:
    return {"max_abs_difference": max(values) if values else None,
            "median_abs_difference": statistics.median(values) if values else None}


def peak_memory(device, workers: int) -> dict:
    """Peak memory of the design: CUDA's ``max_memory_allocated`` of this process (runs in
    worker processes are not seen), or the peak RSS of this process and its largest worker."""
    import torch

    if device.type == "cuda":
        if workers:
            return {"peak_memory_mb": None,
                    "peak_memory_kind": "not measured: runs in worker processes"}
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "cuda max_memory_allocated"}
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    rss = max(resource.getrusage(who).ru_maxrss
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"peak_memory_mb": rss * unit / 2**20, "peak_memory_kind": "cpu peak RSS"}


def run_design(spec, out: Path, args, command: str, waves: bool) -> dict:
    """Every run of the design into ``out`` (with ``waves``: waves of seeds until decided)."""
    from causalloc.cli.run import until_conclusive
    from causalloc.runs import execute_design

    options = {"workers": args.workers, "progress": not args.json, "command": command}
    if waves:
        return until_conclusive(spec, out, look_every=args.look_every, max_blocks=args.max_blocks,
                                analysis=args.analysis, **options)
    return execute_design(spec, out, **options)


def parse_args(argv=None) -> argparse.Namespace:
    from causalloc.devices import DTYPES

    parser = argparse.ArgumentParser(
        description="Run a whole design spec on a GPU in bfloat16 and its first block again in\n"
                    "float32: runs/hour, peak memory, metric agreement, the hard constraint.",
        epilog=__doc__[__doc__.index("examples:"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, required=True, metavar="SPEC",
                        help="experiment spec (TOML)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder: DIR/design and DIR/float32-first-block (resumable)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES,
                        help="the runs' dtype, [testbed] run_dtype (default bfloat16)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="local worker processes (default 0: in this process)")
    parser.add_argument("--until-conclusive", action="store_true",
                        help="add seeds in waves until every primary comparison is decided")
    parser.add_argument("--analysis", type=Path, metavar="FILE",
                        help="analysis spec whose primary family decides --until-conclusive "
                             "(as causalloc run --analysis)")
    parser.add_argument("--look-every", type=int, metavar="N",
                        help="seeds per wave (default: the analysis spec's, else the spec's "
                             "number of seeds)")
    parser.add_argument("--max-blocks", type=int, metavar="M",
                        help="most seeds (default: the analysis spec's, else 6 waves)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--json-out", type=Path, metavar="FILE",
                        help="also write the JSON report to FILE")
    return parser.parse_args(argv)


def main(argv=None) -> dict | None:
    """Run the design and the float32 first block; None (after one printed line) where the
    device is missing."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    reason = cuda_missing(args.device)
    if reason:
        print(reason)
        return None
    import torch

    from causalloc.devices import resolve_device
    from causalloc.runs import expand, load_spec
    from causalloc.runs.store import DB_NAME

    command = shlex.join(["python", "benchmarks/gpu.py", *argv])
    loaded = load_spec(args.spec)
    overrides = run_settings(loaded, args.dtype, args.device)
    spec = with_testbed(loaded, **overrides)
    design, float32_out = args.out / "design", args.out / FLOAT32_FOLDER
    done_before = len(done_rows(design)) if (design / DB_NAME).is_file() else 0
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    summary = run_design(spec, design, args, command, waves=args.until_conclusive)
    wall = time.perf_counter() - start
    memory = peak_memory(device, args.workers)

    block = first_block(spec)
    float32 = with_testbed(block, run_dtype=None if stored_dtype(spec.testbed) == "float32" else "float32")
    float32_summary = run_design(float32, float32_out, args, command, waves=False)
    rows = done_rows(design)
    first_rows = done_rows(design, {run["run_id"] for run in expand(block)})
    float32_rows = done_rows(float32_out)
    changes = [row["max_abs_change_outside_mask"] for row in rows + float32_rows
               if row["max_abs_change_outside_mask"] is not None]
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "spec": str(args.spec), "spec_hash": loaded.spec_hash,
        "run_dtype": args.dtype, "testbed_dtype": stored_dtype(spec.testbed),
        "testbed_overrides": overrides,
        "runs": {"total": summary["total"], **summary["status"], "done_now": len(rows) - done_before},
        "runs_per_hour": 3600.0 * (len(rows) - done_before) / wall,
        "wall_seconds": wall, **memory,
        "float32_first_block": {"runs": float32_summary["total"], **float32_summary["status"],
                                "out": str(float32_out)},
        "agreement": agreement(first_rows, float32_rows,
                               [m for m in COMPARED if m in spec.eval.metrics]),
        "max_abs_change_outside_mask": max(changes) if changes else None,
        "torch": torch.__version__,
        "out": str(design), "command": command,
    }
    if args.until_conclusive:
        report["sequential"] = summary["sequential"]
    text = json.dumps(report, indent=2)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text if args.json else report_text(report))
    return report


def report_text(report: dict) -> str:
    """The report for people: a few lines and the per-run agreement table."""
    runs, agree, block = report["runs"], report["agreement"], report["float32_first_block"]
    memory = report["peak_memory_mb"]
    not_finite = f" ({agree['not_finite']} not finite)" if agree["not_finite"] else ""
    lines = [
        (f"{report['spec']} (spec {report['spec_hash'][:12]}) on {report['device']}, runs in "
         f"{report['run_dtype']} (testbed {report['testbed_dtype']}), torch {report['torch']}"),
        (f"runs: {runs['done']}/{runs['total']} done, {runs['failed']} failed; {runs['done_now']} "
         f"this call, {report['runs_per_hour']:.1f} runs/hour (wall {report['wall_seconds']:.0f} s)"),
        f"peak memory: {'n/a' if memory is None else f'{memory:.0f} MB'} ({report['peak_memory_kind']})",
        f"max change outside the mask over all runs: {report['max_abs_change_outside_mask']}",
        (f"float32 first block: {block['done']}/{block['runs']} done; {agree['matched_runs']} matched "
         f"runs, |{report['run_dtype']} - float32|: max {_number(agree['max_abs_difference'])}, "
         f"median {_number(agree['median_abs_difference'])}{not_finite}"),
    ]
    for metric, values in agree["by_metric"].items():
        lines.append(f"  {metric:<11} max {_number(values['max_abs_difference'])}  "
                     f"median {_number(values['median_abs_difference'])}")
    header = f"  {'condition':<28}{'draw':>5}  " + "  ".join(f"{m:>24}" for m in agree["metrics"])
    lines += ["per run (run / float32 / |difference|):", header]
    for row in agree["runs"]:
        grid = "".join(f" {k}={v}" for k, v in row["grid_point"].items())
        cells = "  ".join(f"{_number(row[m]['run'], 3):>7} {_number(row[m]['float32'], 3):>7} "
                          f"{_number(row[m]['abs_difference'], 2):>8}" for m in agree["metrics"])
        lines.append(f"  {(row['condition'] + grid):<28}{row['mask_draw']:>5}  {cells}")
    if "sequential" in report:
        sequential = report["sequential"]
        lines.append(f"sequential: {len(sequential['seeds'])} seeds, decided {sequential['decided']}: "
                     + "; ".join(f"{k}: {v}" for k, v in sequential["decisions"].items()))
    return "\n".join(lines)


def _number(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


if __name__ == "__main__":
    main()
