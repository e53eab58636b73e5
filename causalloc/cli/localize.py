"""``causalloc localize``: score every value vector with localization methods, select masks at
an exact budget and, on a testbed, measure how well they find the true region V_tgt."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from causalloc.devices import check_device, check_dtype
from causalloc.errors import MaskError, SpecError

DESCRIPTION = """Score every value vector of theta_o with one or more localization methods
(forget data, and retain data for the methods that use it) and keep the top units at an exact
budget. By default theta_o and the data come from a controlled testbed (built or reused from
the cache), whose known V_tgt gives each mask's precision / recall / Jaccard, per-layer counts
and overlaps; with --model-dir they come from a saved model and the TOFU files instead.

Writes, per method, DIR/<method>/mask.json, scores.npy and scores.csv (layer, unit, score,
selected, method details), DIR/masks/<method>.json (the report reads masks/), and
DIR/layers.csv, DIR/overlap.csv, DIR/localize.json; on a testbed also DIR/accuracy.csv and
DIR/masks/oracle.json (V_tgt). Accuracy rows are given for the requested budget and, when it
differs from |V_tgt|, for the top-|V_tgt| units of the same scores (equal budget, where
precision = recall)."""

EPILOG = """examples:
  causalloc localize --method activations --budget 0.1 --out masks/
  causalloc localize --method activations,wagle,grad_x_weight,memflex,random --budget 0.1 --out loc/
  causalloc localize --method all --out loc/ --json           # budget = |V_tgt|, summary as JSON
  causalloc localize --method wagle --budget 0.05 --per-layer --seed 3 --out loc/
  causalloc localize --method memflex --hyper memflex.n_copies=5 --budget 200 --out loc/
  causalloc localize --method hard_concrete,slimming --budget 0.1 --out loc/   # learned gates
  causalloc localize --method slimming --hyper slimming.steps=50 --set target_seed=1 --out loc/
  causalloc localize --method slimming --hyper slimming.layer_norm=false \\
      --hyper slimming.forget_loss=unlikelihood --hyper slimming.lr=0.1 --out loc/   # raw gradients
  causalloc localize --method activations --testbed tofu --tofu-path "$CAUSALLOC_TOFU_DIR" --out loc/
  causalloc localize --method activations --set inject_steps=800 --cache-dir /scratch/c --out loc/
  causalloc localize --method activations --budget 0.1 --model-dir theta_o/ \\
      --tofu-path "$CAUSALLOC_TOFU_DIR" --authors 20 --out loc/   # no testbed: no accuracy
"""

def register(sub) -> None:
    parser = sub.add_parser(
        "localize", help="localize the forget knowledge: scores and masks per method",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, metavar="NAME[,NAME...]",
                        help="localization method(s), comma-separated, or 'all'")
    parser.add_argument("--budget", metavar="P",
                        help="fraction of value vectors in (0, 1] or a unit count > 1 "
                             "(default on a testbed: |V_tgt|, i.e. equal budget)")
    parser.add_argument("--per-layer", action="store_true",
                        help="take the same share of units from every layer (default: global top-k)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the methods that draw (random, memflex); default 0")
    parser.add_argument("--hyper", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method hyperparameter, VALUE parsed as JSON (repeatable)")
    parser.add_argument("--testbed", default="tiny", metavar="KIND",
                        help="tiny | tofu | smollm2 | hf (default: tiny; hf needs "
                             "--set model=ID_OR_DIR)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TestbedConfig field (repeatable)")
    parser.add_argument("--tofu-path", metavar="DIR",
                        help="TOFU files: the data of --testbed tofu or of --model-dir")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="testbed cache (default $CAUSALLOC_CACHE/testbeds or "
                             "~/.cache/causalloc/testbeds)")
    parser.add_argument("--model-dir", metavar="DIR",
                        help="localize in this saved model (HF folder with tokenizer) on the TOFU "
                             "forget/retain split of --tofu-path instead of a testbed")
    parser.add_argument("--authors", type=int, metavar="N",
                        help="with --model-dir: keep N TOFU authors in all (default: all)")
    parser.add_argument("--forget-authors", type=int, default=2, metavar="N",
                        help="with --model-dir: TOFU forget authors, 2, 10 or 20 (default 2)")
    parser.add_argument("--max-length", type=int, default=128, metavar="T",
                        help="with --model-dir: tokens per example (a testbed uses its own)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B",
                        help="examples per scoring batch (default 16, as in runs: "
                             "causalloc.attribution.inputs.BATCH_SIZE)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the testbed's; with "
                                         "--model-dir auto = CUDA when present)")
    parser.add_argument("--dtype", default="float32",
                        help="with --model-dir: float32 | bfloat16 | float16 (a testbed uses "
                             "its own)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=handle)


# argument checks (before any model is loaded) --------------------------------------------
def parse_methods(text: str) -> list[str]:
    """``a,b`` -> ``["a", "b"]`` (order kept, duplicates dropped); ``all`` -> every method."""
    from causalloc.attribution import METHODS, get_method

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SpecError(f"--method: no method name in {text!r} (known: {sorted(METHODS)})")
    if names == ["all"]:
        return sorted(METHODS)
    for name in names:
        get_method(name)
    return list(dict.fromkeys(names))


def parse_budget(text: str | None) -> int | float | None:
    """``--budget`` text -> an int (unit count, or 1 = the whole model) or a float fraction;
    see :func:`causalloc.masks.budget_to_count`. The model-dependent upper bound is checked
    once the model is known."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise MaskError(f"--budget: {text!r} is not a number (a fraction in (0, 1] or a "
                            "unit count)") from None
    if not value > 0 or (isinstance(value, float) and value > 1):
        raise MaskError(f"--budget: {text!r} must be a fraction in (0, 1] or a unit count >= 1")
    return value


def parse_hyper(pairs: list[str], methods: list[str]) -> dict[str, dict]:
    """``METHOD.KEY=VALUE`` strings -> ``{method: {key: value}}``, names checked."""
    from causalloc.attribution import get_method
    from causalloc.cli.testbed import parse_overrides

    out: dict[str, dict] = {m: {} for m in methods}
    for dotted, value in parse_overrides(pairs).items():
        method, sep, key = dotted.partition(".")
        if not sep or not key:
            raise SpecError(f"--hyper {dotted}: expected METHOD.KEY=VALUE")
        if method not in out:
            raise SpecError(f"--hyper {dotted}: method {method!r} is not among --method {methods}")
        allowed = sorted(get_method(method).defaults)
        if key not in allowed:
            raise SpecError(f"--hyper {dotted}: {method} has no hyperparameter {key!r} "
                            f"(allowed: {allowed})")
        out[method][key] = value
    return out


def _check_options(args) -> None:
    for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length),
                        ("--forget-authors", args.forget_authors), ("--authors", args.authors)):
        if value is not None and value < 1:
            raise SpecError(f"{flag}: must be >= 1, got {value}")
    if args.seed < 0:
        raise SpecError(f"--seed: must be >= 0, got {args.seed}")
    check_dtype(args.dtype, "--dtype")
    if args.device is not None:
        check_device(args.device, "--device")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: exists and is not a folder")


# sources of model and data (built by causalloc.attribution.inputs) ------------------------
def _source(args, say):
    """theta_o and the data: a testbed, or a saved model with the TOFU split (--model-dir)."""
    from causalloc.attribution.inputs import model_dir_source, testbed_source

    if args.model_dir is None:
        from causalloc.cli.testbed import testbed_from_args

        config, testbed = testbed_from_args(args, say)
        return testbed_source(config, testbed, device=args.device)
    if args.set or args.testbed != "tiny":
        raise SpecError("--model-dir: --testbed and --set describe a testbed; drop them")
    if not args.tofu_path:
        raise SpecError("--model-dir: needs --tofu-path (the forget/retain data)")
    say(f"model {args.model_dir}, TOFU data {args.tofu_path}")
    return model_dir_source(args.model_dir, args.tofu_path, authors=args.authors,
                            forget_authors=args.forget_authors, max_length=args.max_length,
                            dtype=args.dtype, device=args.device)


# outputs ----------------------------------------------------------------------------------
def scores_table(result):
    """Tidy per-unit table: layer, unit, score, selected, then the method's detail arrays."""
    import numpy as np
    import pandas as pd

    n_layers, n_units = result.scores.shape
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_units),
                          "unit": np.tile(np.arange(n_units), n_layers),
                          "score": result.scores.ravel(),
                          "selected": result.mask.dense().ravel()})
    for name, values in result.details.items():
        values = np.asarray(values)
        if values.shape == result.scores.shape:
            table[name] = values.ravel()
    return table


def _write_method(out: Path, result) -> dict:
    import numpy as np

    folder = out / result.method
    folder.mkdir(parents=True, exist_ok=True)
    result.mask.save(folder / "mask.json")
    result.mask.save(out / "masks" / f"{result.method}.json")
    np.save(folder / "scores.npy", result.scores)
    scores_table(result).to_csv(folder / "scores.csv", index=False)
    return {"mask": str(folder / "mask.json"), "scores": str(folder / "scores.npy"),
            "scores_csv": str(folder / "scores.csv")}


def handle(args) -> int:
    import numpy as np
    import torch

    from causalloc.attribution import localize
    from causalloc.attribution.accuracy import accuracy_table, layer_distribution, pairwise_overlap
    from causalloc.masks import budget_to_count
    from causalloc.models.units import adapter_for

    def say(message: str) -> None:
        if not args.no_progress:
            print(f"localize: {message}", file=sys.stderr, flush=True)

    methods = parse_methods(args.method)
    budget = parse_budget(args.budget)
    hyper = parse_hyper(args.hyper, methods)
    _check_options(args)
    if budget is None and args.model_dir is not None:
        raise SpecError("--budget: required with --model-dir (no V_tgt to match)")

    source = _source(args, say)
    model, reference = source.model, source.reference
    signature = adapter_for(model).signature
    if reference is not None:
        reference.check_fits(signature)
    budget = reference.size if budget is None else budget
    count = budget_to_count(budget, signature)
    forget = source.batches("forget", args.batch_size)
    retain = source.batches("retain", args.batch_size)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, summary_methods = {}, {}
    for number, name in enumerate(methods, 1):
        say(f"{name} ({number}/{len(methods)}): scoring {signature.total_units} value vectors")
        start = time.perf_counter()
        result = localize(name, model, forget, retain, budget, per_layer=args.per_layer,
                          seed=args.seed, **hyper[name])
        seconds = time.perf_counter() - start
        result.mask.meta["source"] = {k: v for k, v in source.info.items() if k != "diagnostics"}
        results[name] = result
        summary_methods[name] = {"size": result.mask.size, "hash": result.mask.hash(),
                                 "hyper": result.hyper, "seconds": round(seconds, 3),
                                 "per_layer_counts": result.mask.per_layer_counts().tolist(),
                                 "files": _write_method(out, result)}

    masks = {name: r.mask for name, r in results.items()}
    accuracy = None
    if reference is not None:
        reference.save(out / "masks" / "oracle.json")
        masks["oracle"] = reference
        accuracy = accuracy_table(results, reference, args.per_layer)
        accuracy.to_csv(out / "accuracy.csv", index=False)
        for row in accuracy[accuracy["equal_budget"]].to_dict("records"):
            summary_methods[row["method"]]["accuracy_equal_budget"] = {
                k: row[k] for k in ("precision", "recall", "jaccard", "chance_precision")}
        for row in accuracy[accuracy["selection"] == "requested"].to_dict("records"):
            summary_methods[row["method"]]["accuracy"] = {
                k: row[k] for k in ("hits", "precision", "recall", "jaccard", "chance_precision")}
    layer_distribution(masks).to_csv(out / "layers.csv", index=False)
    stale = sorted(str(p.relative_to(out)) for p in (out / "masks").glob("*.json")
                   if p.stem not in masks)
    if reference is None and (out / "accuracy.csv").exists():
        stale.append("accuracy.csv")
    if stale:
        print(f"localize: warning: {out} also holds {stale} from an earlier run (the report "
              "reads every mask in masks/)", file=sys.stderr)
    pairwise_overlap(masks).to_csv(out / "overlap.csv", index=False)

    summary = {
        "arguments": {k: v for k, v in vars(args).items() if k not in ("func", "command")},
        "source": source.info, "signature": signature.to_dict(),
        "budget": budget, "count": count, "per_layer": args.per_layer, "seed": args.seed,
        "n_forget": len(source.splits.forget), "n_retain": len(source.splits.retain),
        "reference_size": reference.size if reference is not None else None,
        "torch": torch.__version__, "numpy": np.__version__,
        "methods": summary_methods, "out": str(out),
    }
    (out / "localize.json").write_text(json.dumps(summary, indent=2, default=_plain))
    if args.json:
        print(json.dumps(summary, default=_plain))
    else:
        print(_summary_text(summary, accuracy))
    return 0


def _plain(value):
    """JSON fallback for numpy scalars."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _summary_text(summary: dict, accuracy) -> str:
    signature = summary["signature"]
    per_layer = ", per layer" if summary["per_layer"] else ""
    header = (f"{summary['count']} of {signature['n_layers'] * signature['n_units']} value vectors "
              f"per mask (budget {summary['budget']}{per_layer}); written to {summary['out']}")
    lines = [header]
    if accuracy is None:
        lines.append(f"{'method':<14} {'size':>6} {'seconds':>8}  units per layer")
        for name, m in summary["methods"].items():
            lines.append(f"{name:<14} {m['size']:>6} {m['seconds']:>8.2f}  {m['per_layer_counts']}")
        return "\n".join(lines)
    lines.append(f"against V_tgt ({summary['reference_size']} units; chance precision "
                 f"{accuracy['chance_precision'].iloc[0]:.3f}):")
    lines.append(f"{'method':<14} {'selection':<13} {'size':>6} {'hits':>6} {'precision':>9} "
                 f"{'recall':>7} {'jaccard':>7} {'seconds':>8}")
    for row in accuracy.to_dict("records"):
        seconds = summary["methods"][row["method"]]["seconds"]
        timing = f"{seconds:>8.2f}" if row["selection"] == "requested" else ""
        lines.append(f"{row['method']:<14} {row['selection']:<13} {row['size']:>6} {row['hits']:>6} "
                     f"{row['precision']:>9.3f} {row['recall']:>7.3f} {row['jaccard']:>7.3f} "
                     f"{timing}")
    return "\n".join(lines)
