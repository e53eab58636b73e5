"""What one checkpoint evaluation costs: ES with the shared prompt prefix run once vs whole
rows, and what TOFU model utility and log forget quality add.

Variants, each one evaluation of the same model in the executor's worker state
(:class:`causalloc.runs.worker.TestbedState`):

- ``es``: RS and FS (one teacher-forced pass over forget + retain, the prefix every item
  starts with run once: :func:`causalloc.metrics.extraction_strength`), what every
  checkpoint costs without ``mu95`` / ``model_utility`` among the run's metrics;
- ``es_whole_rows``: the same ES with every row run whole (the path before the shared
  prefix); ``es_values_equal`` says whether both gave the same ES for every item;
- ``es_utility``: the same plus model utility (teacher-forced NLLs of the three utility sets
  and greedy answers for ROUGE) and log forget quality (forget-set truth ratios, KS test), what
  a checkpoint costs when they are asked for.

Also timed alone: the utility's generation pass (``generation``). Variants alternate call by
call so a drifting machine speed hits all alike; times are medians over ``--repeats`` calls.

    python benchmarks/checkpoint_eval.py --authors 10 --forget-authors 1 \\
        --set hidden=64 --set intermediate=512 --set layers=2 --set inject_steps=400 --json
    python benchmarks/checkpoint_eval.py --spec analyses/smollm2_oracle_vs_random.toml --es-only --repeats 2

``--spec`` takes the testbed and evaluation items of the spec's first run (built or cached)
instead of a tiny testbed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor import add_testbed_arguments, tiny_testbed_state

from causalloc.metrics import extraction_strength, shared_prefix_length


def spec_testbed_state(spec_path: str):
    """The worker's shared state of a spec's first run: its testbed (built or cached) with
    the run's evaluation items (retain subset and selection split)."""
    from causalloc.runs import expand, load_spec
    from causalloc.runs.worker import resolve_testbed, TestbedState

    run = expand(load_spec(spec_path))[0]
    testbed = resolve_testbed(run["testbed"], progress=True)
    return TestbedState(testbed, testbed.config.max_length, run["eval"].get("split"),
                        run["eval"].get("retain_items"))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=10, help="calls of each variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--spec", help="evaluate on the testbed and items of this spec's first run")
    parser.add_argument("--es-only", action="store_true",
                        help="only the two ES variants (SmolLM2's utility probes take minutes a call)")
    add_testbed_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    state = spec_testbed_state(args.spec) if args.spec else tiny_testbed_state(args)
    variants = {
        "es": lambda: state.scores(),
        "es_whole_rows": lambda: extraction_strength(state.model, state._score_batches, share_prefix=False),
    }
    if not args.es_only:
        state.scores_with_utility()  # builds the probes (once per testbed in a worker) and theta_r's ratios
        variants.update(es_utility=lambda: state.scores_with_utility(),
                        generation=lambda: state._utility_probe._answerer(state.model))
    seconds = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, call in variants.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    ms = {name: 1000 * float(np.median(values)) for name, values in seconds.items()}
    report = {
        **{f"ms_{name}": value for name, value in ms.items()},
        "ratio_es_whole_rows_to_es": ms["es_whole_rows"] / ms["es"],
        "shared_prefix_tokens": shared_prefix_length(state._score_batches),
        "mean_tokens_per_item": float(np.mean([len(e["input_ids"]) for e in state.forget + state.retain])),
        "es_values_equal": bool(np.array_equal(
            extraction_strength(state.model, state._score_batches),
            extraction_strength(state.model, state._score_batches, share_prefix=False))),
        "utility_items": state.testbed.diagnostics.get("utility_sets"),
        "n_forget": len(state.forget), "n_retain": len(state.retain),
        "values": state.scores() if args.es_only else state.scores_with_utility(),
        "settings": vars(args),
    }
    if not args.es_only:
        report["ratio_es_utility_to_es"] = ms["es_utility"] / ms["es"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, value in ms.items():
            print(f"{name:12s} {value:8.1f} ms per checkpoint")
        utility = "" if args.es_only else f"es_utility / es = {report['ratio_es_utility_to_es']:.2f}; "
        print(f"{utility}es_whole_rows / es = "
              f"{report['ratio_es_whole_rows_to_es']:.2f} (shared prefix {report['shared_prefix_tokens']} "
              f"of {report['mean_tokens_per_item']:.0f} tokens; ES equal: {report['es_values_equal']})")
    return report


if __name__ == "__main__":
    main()
