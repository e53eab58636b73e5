"""What TOFU model utility and log forget quality add to one checkpoint evaluation.

Variants, each one evaluation of the same model in the executor's worker state
(:class:`causalloc.runs.worker.TestbedState`):

- ``es``: RS and FS (one teacher-forced pass over forget + retain), what every checkpoint
  costs without ``mu95`` / ``model_utility`` among the run's metrics;
- ``es_utility``: the same plus model utility (teacher-forced NLLs of the three utility sets
  and greedy answers for ROUGE) and log forget quality (forget-set truth ratios, KS test), what
  a checkpoint costs when they are asked for.

Also timed alone: the utility's generation pass (``generation``). Variants alternate call by
call so a drifting machine speed hits all alike; times are medians over ``--repeats`` calls.

    python benchmarks/checkpoint_eval.py --authors 10 --forget-authors 1 \\
        --set hidden=64 --set intermediate=512 --set layers=2 --set inject_steps=400 --json
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=10, help="calls of each variant")
    parser.add_argument("--threads", type=int, default=1)
    add_testbed_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    state = tiny_testbed_state(args)
    state.scores_with_utility()  # builds the probes (once per testbed in a worker) and theta_r's ratios
    variants = {
        "es": lambda: state.scores(),
        "es_utility": lambda: state.scores_with_utility(),
        "generation": lambda: state._utility_probe._answerer(state.model),
    }
    seconds = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, call in variants.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    ms = {name: 1000 * float(np.median(values)) for name, values in seconds.items()}
    report = {
        **{f"ms_{name}": value for name, value in ms.items()},
        "ratio_es_utility_to_es": ms["es_utility"] / ms["es"],
        "utility_items": state.testbed.diagnostics.get("utility_sets"),
        "n_forget": len(state.forget), "n_retain": len(state.retain),
        "values": state.scores_with_utility(),
        "settings": vars(args),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, value in ms.items():
            print(f"{name:12s} {value:8.1f} ms per checkpoint")
        print(f"es_utility / es = {report['ratio_es_utility_to_es']:.2f}")
    return report


if __name__ == "__main__":
    main()
