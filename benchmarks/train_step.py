"""How a masked training step runs its forward passes, side by side.

Variants (each is one NPO step: forget term with the frozen reference, plus the retain NLL):

- ``full``: one forward pass per batch (forget, retain, reference), all positions, as
  public code does;
- ``scored``: the same passes computing logits at the scored positions only
  (:mod:`causalloc.models.positions`);
- ``scored_one_pass``: scored positions, forget and retain rows in one pass
  (``StepContext.models`` with the executor's ``merged``), as causalloc's executor runs it.

Same model (theta_o of the default tiny testbed), mask (a uniform random 10% of the value
vectors), AdamW and batches. The variants alternate step by step on the same trainable
columns, so a drifting machine speed hits all alike; each ratio is the median over steps
of ``full`` seconds / variant seconds. The losses are compared step by step with ``full``
(equal to float rounding).

    python benchmarks/train_step.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor import add_testbed_arguments, tiny_testbed_state


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=100, help="steps of each variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    add_testbed_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    from causalloc.data.collate import stack_batches
    from causalloc.masks import uniform_random
    from causalloc.models.positions import scored_positions, scored_positions_only
    from causalloc.unlearn import make_objective
    from causalloc.unlearn.base import StepContext
    from causalloc.unlearn.runner import split_output
    from causalloc.unlearn.trainer import BatchStream, MaskedColumns

    torch.set_num_threads(args.threads)
    state = tiny_testbed_state(args)
    model = state.model
    mask = uniform_random(state.signature, 0.1, np.random.default_rng(0))
    objective = make_objective("npo")
    objective.prepare(model.config, torch.Generator().manual_seed(0))
    forget = iter(BatchStream([state.forget], args.batch_size, state.pad, 0))
    retain = iter(BatchStream([state.retain], args.batch_size, state.pad, 1))
    variants = ("full", "scored", "scored_one_pass")
    seconds = {name: [] for name in variants}
    losses = {name: [] for name in variants}
    tokens = {"total": 0, "padding": 0, "scored": 0}
    with MaskedColumns(model, mask) as columns:
        optimizer = torch.optim.AdamW(list(columns.columns), lr=1e-3)

        def call(variant, batch, frozen=False, **kw):
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            positions = scored_positions_only(model, batch, columns.adapter) if variant != "full" else nullcontext()
            with positions, columns.disabled() if frozen else nullcontext(), torch.set_grad_enabled(not frozen):
                return model(**inputs, use_cache=False, **kw)

        def one_pass(batches, **kw):
            return split_output(call("scored", stack_batches(batches, state.pad), **kw), batches)

        for _ in range(args.steps):
            (forget_batch,), (retain_batch,) = next(forget), next(retain)
            for batch in (forget_batch, retain_batch):
                tokens["total"] += batch["input_ids"].numel()
                tokens["padding"] += int((batch["attention_mask"] == 0).sum())
                tokens["scored"] += int(scored_positions(batch["labels"]).sum())
            for variant in variants:
                start = time.perf_counter()
                ctx = StepContext(forget=forget_batch, retain=retain_batch, refusal=None, step=0,
                                  model=lambda b, _v=variant, **kw: call(_v, b, **kw),
                                  reference=lambda b, _v=variant, **kw: call(_v, b, frozen=True, **kw),
                                  merged=one_pass if variant == "scored_one_pass" else None)
                loss = objective.loss(ctx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(columns.columns), 1.0)
                seconds[variant].append(time.perf_counter() - start)
                losses[variant].append(float(loss.detach()))
            optimizer.step()  # one update per step: every variant sees the same columns
    skip = min(5, args.steps - 1)  # warm-up steps
    times = {v: np.array(seconds[v][skip:]) for v in variants}
    report = {
        **{f"ms_per_step_{v}": 1000 * float(np.median(times[v])) for v in variants},
        **{f"ratio_{v}": float(np.median(times["full"] / times[v])) for v in variants[1:]},
        **{f"max_abs_loss_difference_{v}": float(np.max(np.abs(np.subtract(losses[v], losses["full"]))))
           for v in variants[1:]},
        "padding_fraction": tokens["padding"] / tokens["total"],
        "scored_fraction": tokens["scored"] / tokens["total"],
        "settings": vars(args),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for v in variants:
            line = f"{v:16s} {report[f'ms_per_step_{v}']:.1f} ms/step"
            if v != "full":
                line += (f"   ratio {report[f'ratio_{v}']:.3f}   max |loss difference| "
                         f"{report[f'max_abs_loss_difference_{v}']:.3g}")
            print(line)
        print(f"tokens: padding {report['padding_fraction']:.2f}, scored {report['scored_fraction']:.2f}")
    return report


if __name__ == "__main__":
    main()
