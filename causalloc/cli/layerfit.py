"""``causalloc layerfit``: the seed paper's per-layer least-squares analysis (Lee et al. 2025,
Figure 1) on a controlled testbed, oracle region against layer-matched random regions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from causalloc.errors import SpecError

DESCRIPTION = """Fit, at every layer and with the MLP inputs held fixed (theta_o's residual
stream on the forget split, every non-pad token), the change of theta_o's MLP output towards
theta_r's by changing only the value vectors of one region: the oracle region V_tgt, or K random
regions outside it with V_tgt's unit count in every layer. Each fit is a ridge least-squares
solve in closed form (float64; lambda = RIDGE x the mean diagonal of A_S^T A_S). Then every
layer's fit is applied to theta_o at once and the fitted model is scored: FS = 1 - ES(forget),
RS = ES(retain), next to theta_o and theta_r themselves.

Writes DIR/layerfit.csv (one row per region, draw and layer: units, tokens, lambda, residual
fraction, norms of the change and of the selected value vectors), DIR/layerfit_summary.csv
(one row per model: mean residual fraction across layers, ES, FS, RS), DIR/layerfit.json
(testbed hash and theta_o fingerprint, seeds, ridge, provenance), DIR/masks/*.json (the
regions), DIR/layerfit.pdf and .png (residual fraction per layer) and DIR/report.md."""

EPILOG = """examples:
  causalloc layerfit --out layerfit/                   # default tiny testbed, 3 random draws
  causalloc layerfit --draws 10 --seed 1 --out layerfit/ --json
  causalloc layerfit --set inject_steps=800 --cache-dir /scratch/c --out layerfit/
  causalloc layerfit --testbed tofu --tofu-path "$CAUSALLOC_TOFU_DIR" --out layerfit/
  causalloc layerfit --ridge 1e-4 --device cuda --out layerfit/
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "layerfit", help="per-layer least-squares fits of theta_r in oracle vs random regions",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--testbed", default="tiny", metavar="KIND",
                        help="testbed kind: tiny | tofu | smollm2 | hf (default: tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TestbedConfig field (repeatable)")
    parser.add_argument("--tofu-path", metavar="DIR", help="TOFU files of a tofu / smollm2 / hf testbed")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="testbed cache (default $CAUSALLOC_CACHE/testbeds or ~/.cache/causalloc/testbeds)")
    parser.add_argument("--draws", type=int, default=3, metavar="K",
                        help="random regions, each layer-matched to V_tgt and outside it (default 3)")
    parser.add_argument("--seed", type=int, default=0,
                        help="draw k uses numpy.random.default_rng([SEED, k]) (default 0)")
    parser.add_argument("--ridge", type=float, metavar="R",
                        help="lambda relative to the mean diagonal of A_S^T A_S (default: "
                             "causalloc.layerfit.RIDGE; the value used is in layerfit.json)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B",
                        help="forget examples per forward pass (default 16)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the testbed's)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=handle)


def _check_options(args) -> None:
    from causalloc.devices import check_device

    for flag, value in (("--draws", args.draws), ("--batch-size", args.batch_size)):
        if value < 1:
            raise SpecError(f"{flag}: must be >= 1, got {value}")
    if args.seed < 0:
        raise SpecError(f"--seed: must be >= 0, got {args.seed}")
    if args.ridge is not None and not args.ridge > 0:
        raise SpecError(f"--ridge: must be > 0 (it keeps the solve well-posed), got {args.ridge}")
    if args.device is not None:
        check_device(args.device, "--device")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: exists and is not a folder")


def handle(args) -> int:
    from causalloc.cli.testbed import testbed_from_args
    from causalloc.layerfit import RIDGE, layer_fit
    from causalloc.provenance import run_environment
    from causalloc.report.figures import layerfit_residuals
    from causalloc.report.style import PNG_DPI

    def say(message: str) -> None:
        if not args.no_progress:
            print(f"layerfit: {message}", file=sys.stderr, flush=True)

    _check_options(args)
    start = time.perf_counter()
    config, testbed = testbed_from_args(args, say)
    theta_o = testbed.load_model("theta_o", device=args.device)
    theta_r = testbed.load_model("theta_r", device=args.device)
    result = layer_fit(theta_o, theta_r, testbed.tokenizer(), testbed.splits, testbed.v_tgt,
                       config.max_length, draws=args.draws, seed=args.seed,
                       ridge=RIDGE if args.ridge is None else args.ridge,
                       batch_size=args.batch_size, progress=say)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.layers.to_csv(out / "layerfit.csv", index=False)
    result.summary.to_csv(out / "layerfit_summary.csv", index=False)
    for region in result.regions:
        region.save(out / "masks" / f"{region.name}.json")
    figure = layerfit_residuals(result.layers)
    figure.savefig(out / "layerfit.pdf")
    figure.savefig(out / "layerfit.png", dpi=PNG_DPI)
    record = {
        "arguments": {k: v for k, v in vars(args).items() if k not in ("func", "command")},
        "testbed": {"kind": config.kind, "hash": config.hash(),
                    "theta_o_fingerprint": testbed.theta_o_fingerprint,
                    "diagnostics": testbed.diagnostics},
        "tokens": "every non-pad token of the forget split (teacher-forced question + answer)",
        "n_tokens": result.n_tokens, "ridge": result.ridge,
        "lambda": "ridge * tr(A_S^T A_S) / |S| per region and layer (column lam of layerfit.csv)",
        "seed": args.seed, "draws": args.draws,
        "regions": [{"name": r.name, "size": r.size, "hash": r.hash(),
                     "per_layer_counts": r.per_layer_counts().tolist(),
                     "rng_seed": (r.meta.get("rng") or {}).get("entropy")} for r in result.regions],
        "summary": result.summary.to_dict("records"),
        "environment": run_environment(),
        "seconds": round(time.perf_counter() - start, 2),
        "files": {name: str(out / name) for name in ("layerfit.csv", "layerfit_summary.csv", "layerfit.json",
                                                     "layerfit.pdf", "layerfit.png", "report.md")},
    }
    (out / "layerfit.json").write_text(json.dumps(record, indent=2))
    (out / "report.md").write_text(report_markdown(result.layers, result.summary, record))
    if args.json:
        print(json.dumps(record))
    else:
        print(_answer_table(result.summary).to_string(index=False))
        print(f"written to {out} in {record['seconds']:.1f} s")
    return 0


# report ------------------------------------------------------------------------------------
def _spread(values) -> str:
    """``mean`` for one value, ``mean (min-max)`` for several; ``-`` when all are NaN."""
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.3g}"
    return f"{values.mean():.3g} ({values.min():.3g}-{values.max():.3g})"


def _answer_table(summary):
    """region -> units, mean residual fraction across layers, FS, RS; random regions as mean
    (min-max) over draws."""
    import pandas as pd

    rows = []
    for region, group in summary.groupby("region", sort=False):
        label = f"{region} ({len(group)} draws)" if len(group) > 1 else region
        rows.append({"region": label, "units": int(group["n_units"].iloc[0]) or "-",
                     "mean residual fraction across layers": _spread(group["mean_residual_fraction"]),
                     "FS": _spread(group["fs"]), "RS": _spread(group["rs"])})
    return pd.DataFrame(rows)


def _layer_table(layers):
    """layer -> units per region, oracle residual fraction, random mean (min-max)."""
    import pandas as pd

    rows = []
    for layer, group in layers.groupby("layer"):
        row = {"layer": layer, "units": int(group["n_units"].iloc[0])}
        for region, part in group.groupby("region", sort=False):
            row[f"{region} residual fraction"] = _spread(part["residual_fraction"])
            row[f"{region} change norm / value norm"] = _spread(part["delta_norm"] / part["value_norm"])
        rows.append(row)
    return pd.DataFrame(rows)


def report_markdown(layers, summary, record: dict) -> str:
    """report.md: the answer table first, then the figure, the per-layer numbers and the setup."""
    from causalloc.provenance import describe_environment

    testbed, diagnostics = record["testbed"], record["testbed"]["diagnostics"]
    random = record["regions"][1:]  # the first is V_tgt
    return "\n".join([
        "# Per-layer least-squares fits: oracle vs random regions",
        "",
        ("How close each region's value vectors alone bring theta_o's MLP outputs to theta_r's, "
         "layer by layer with the MLP inputs fixed (residual fraction: 0 = reached, 1 = nothing "
         "gained), and how the model with all layers' fits applied scores (FS = 1 - ES forget, "
         "RS = ES retain). Random regions: mean (min-max) over draws."),
        "",
        _answer_table(summary).to_markdown(index=False),
        "",
        "![Residual fraction per layer](layerfit.png)",
        "",
        ("Residual fraction of the fit per layer: oracle region (V_tgt) and random regions "
         "(mean, band from min to max, dots: draws)."),
        "",
        "## Per layer",
        "",
        _layer_table(layers).to_markdown(index=False),
        "",
        "## Setup",
        "",
        (f"- testbed: {testbed['kind']} `{testbed['hash'][:16]}`; theta_o "
         f"fingerprint `{testbed['theta_o_fingerprint'][:16]}`"),
        (f"- V_tgt: {diagnostics['n_target_units']} of {diagnostics['total_units']} value vectors; "
         f"norm_ratio_vtgt {diagnostics['norm_ratio_vtgt']:.3f}, weight_norm_precision "
         f"{diagnostics['weight_norm_precision']:.3f} (chance {diagnostics['budget']})"),
        f"- tokens: {record['n_tokens']}, {record['tokens']}",
        f"- ridge {record['ridge']:g}: lambda = {record['lambda']}",
        f"- random regions: {len(random)}, layer-matched to V_tgt and outside it; draw k from "
        f"numpy.random.default_rng([{record['seed']}, k]); hashes "
        + ", ".join(f"`{r['hash'][:12]}`" for r in random),
        f"- provenance: {describe_environment(record['environment'])}; {record['seconds']:.1f} s",
        "",
    ])

