"""Per-layer least-squares fits of theta_r's MLP outputs in a region of value vectors (the
seed paper's layer-wise analysis: Lee et al. 2025, EMNLP, Figure 1).

Instead of an output loss, each layer's MLP output of theta_o is pulled towards theta_r's by
changing only the value vectors of one region S: the oracle region V_tgt or a random region
of the same size per layer. The MLP inputs are held fixed: theta_o's residual stream (the
MLP module's input, after the layer norm, which injection never changes) feeds both MLPs, so
at layer l with hidden activations ``A`` (tokens x I, the input of the value module of
theta_o) and target change ``Y = MLP_r(x) - MLP_o(x)`` (tokens x d), changing the selected
value vectors by ``D`` (d x |S|) changes the output by ``A_S D^T``, and the best change is
the ridge least-squares solution (Hoerl & Kennard 1970)

    D^T = (A_S^T A_S + lambda I)^{-1} A_S^T Y,   lambda = ridge * tr(A_S^T A_S) / |S|,

with ``ridge`` = :data:`RIDGE` by default (1e-6 of the mean diagonal: it only makes the solve
well-posed when the selected activations are (nearly) collinear, and moves an exact fit's
residual fraction by about that much). The residual fraction ``||A_S D^T - Y||_F^2 /
||Y||_F^2`` says how much of theta_r's MLP output the region cannot reach: 0 = reached
exactly, 1 = nothing gained. Tokens: every non-pad token of the forget split (teacher-forced
question + answer), not only the answer positions: an MLP output at a prompt position reaches
the answer predictions through attention, so restoring theta_r's computation on the answers
needs it at every position of the input.

The fits are then applied to theta_o all at once (every layer's selected value vectors
changed by its D; later layers then see changed inputs, which the per-layer fits did not)
and the fitted model is scored: FS = 1 - ES(forget), RS = ES(retain) (the seed paper's
notation; ES: :func:`causalloc.metrics.extraction_strength`).

Under the norm-matched injection of :mod:`causalloc.testbed` the V_tgt key rows (gate, up)
changed too, so theta_r's activations of the V_tgt units differ from theta_o's and even the
oracle region cannot reach Y exactly with value vectors alone; with a change made only in
value vectors it can (residual ~0, see tests/unit/test_layerfit.py).

Hand-written: the hooks that hold the MLP inputs fixed and read the value-module inputs are
specific to the value-vector convention of :mod:`causalloc.models.units`; the solve itself is
``torch.linalg.solve`` in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from causalloc.attribution.signals import captured_value_inputs, forward, inspection_mode
from causalloc.data.collate import encode_items, eval_batches, pad_id
from causalloc.data.types import QASplits
from causalloc.errors import DataError, MaskError
from causalloc.masks import Mask, layer_matched_random
from causalloc.models.hooks import Hooks
from causalloc.models.units import UnitAdapter, adapter_for

#: ridge strength relative to the mean diagonal of A_S^T A_S (see the module docstring)
RIDGE = 1e-6
#: columns of :attr:`LayerFit.layers`, one row per region, draw and layer
LAYER_COLUMNS = ["region", "draw", "layer", "n_units", "n_tokens", "lam", "target_sq_norm",
                 "residual_fraction", "delta_norm", "value_norm"]
#: columns of :attr:`LayerFit.summary`, one row per fitted model and per reference model
SUMMARY_COLUMNS = ["region", "draw", "n_units", "mean_residual_fraction", "es_forget",
                   "es_retain", "fs", "rs"]

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LayerProblem:
    """The fixed-input least-squares data of one layer on the forget tokens.

    ``units``: sorted unit indices whose activations are kept (the union of the regions to
    fit); ``activations``: ``[tokens, len(units)]`` float64, their value-module inputs in
    theta_o; ``target``: ``[tokens, hidden]`` float64, ``MLP_r(x) - MLP_o(x)``.
    """

    layer: int
    units: np.ndarray
    activations: torch.Tensor
    target: torch.Tensor

    def columns(self, units: np.ndarray) -> torch.Tensor:
        """``A_S``: the activation columns of ``units`` (each must be among ``self.units``)."""
        position = np.searchsorted(self.units, units)
        if units.size and (position.max() >= self.units.size or (self.units[position] != units).any()):
            raise MaskError(f"layer {self.layer}: units {sorted(set(units) - set(self.units))[:5]} "
                            "were not collected (pass every region to collect_problems)")
        return self.activations[:, torch.as_tensor(position, dtype=torch.long)]


@dataclass
class LayerFit:
    """Result of :func:`layer_fit`: per-layer fits, model scores and the regions drawn."""

    layers: pd.DataFrame
    summary: pd.DataFrame
    regions: list[Mask]
    ridge: float
    n_tokens: int


def ridge_fit(a: torch.Tensor, y: torch.Tensor, ridge: float = RIDGE) -> tuple[torch.Tensor, float]:
    """``(D, lambda)`` minimizing ``||a D^T - y||_F^2 + lambda ||D||_F^2`` in closed form.

    ``a``: ``[tokens, k]``, ``y``: ``[tokens, d]``; ``D``: ``[d, k]`` float64, from the normal
    equations ``(a^T a + lambda I) D^T = a^T y`` with ``lambda = ridge * tr(a^T a) / k``
    (:data:`RIDGE`). ``D = 0`` when ``k = 0`` or every selected activation is 0 (nothing to fit).
    """
    a, y = a.double(), y.double()
    k = a.shape[1]
    gram = a.T @ a
    lam = ridge * float(torch.trace(gram)) / k if k else 0.0
    if lam == 0.0:
        return torch.zeros(y.shape[1], k, dtype=torch.float64, device=a.device), 0.0
    eye = torch.eye(k, dtype=torch.float64, device=a.device)
    return torch.linalg.solve(gram + lam * eye, a.T @ y).T, lam


def residual_fraction(a: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> float:
    """``||a D^T - y||_F^2 / ||y||_F^2``: the share of the target left after the fit (NaN for
    a zero target)."""
    y = y.double()
    total = float(y.square().sum())
    return float((a.double() @ delta.T - y).square().sum()) / total if total else float("nan")


@contextmanager
def _mlp_targets(theta_o: UnitAdapter, theta_r: UnitAdapter) -> Iterator[list[torch.Tensor | None]]:
    """Record ``MLP_r(x) - MLP_o(x)`` at every layer of each theta_o forward, with ``x`` the
    input theta_o's MLP receives (theta_r's MLP runs on theta_o's residual stream)."""
    latest: list[torch.Tensor | None] = [None] * len(theta_o.mlp_modules)

    def recorder(layer: int) -> Callable:
        def hook(module, args, output):
            latest[layer] = theta_r.mlp_modules[layer](args[0]) - output

        return hook

    with Hooks() as hooks:
        for l, module in enumerate(theta_o.mlp_modules):
            hooks.forward(module, recorder(l))
        yield latest


def collect_problems(theta_o: torch.nn.Module, theta_r: torch.nn.Module, batches: Sequence[Batch],
                     regions: Sequence[Mask]) -> list[LayerProblem]:
    """One :class:`LayerProblem` per layer from teacher-forced theta_o passes over ``batches``,
    on every non-pad token (``attention_mask == 1``), keeping the activations of the units of
    any of ``regions``. MaskError when the two models or a region do not fit one another."""
    adapter_o, adapter_r = adapter_for(theta_o), adapter_for(theta_r)
    if adapter_o.signature != adapter_r.signature:
        raise MaskError(f"theta_o {adapter_o.signature} and theta_r {adapter_r.signature} differ "
                        "in architecture: they must be the same model before and after injection")
    for region in regions:
        region.check_fits(adapter_o.signature)
    n_layers = adapter_o.signature.n_layers
    units = [np.unique(np.concatenate([r.units[l] for r in regions] or [np.zeros(0, np.int64)]))
             for l in range(n_layers)]
    kept = [torch.as_tensor(u, dtype=torch.long) for u in units]
    pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(n_layers)]
    device = next(theta_o.parameters()).device
    with inspection_mode(theta_o), inspection_mode(theta_r), torch.no_grad(), \
            captured_value_inputs(adapter_o) as activations, _mlp_targets(adapter_o, adapter_r) as targets:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            forward(theta_o, batch)
            tokens = batch["attention_mask"].bool()
            for l in range(n_layers):
                pieces[l].append((activations[l][tokens][:, kept[l].to(device)].double().cpu(),
                                  targets[l][tokens].double().cpu()))
    if sum(a.shape[0] for a, _ in pieces[0]) == 0:
        raise DataError("layer fit: the forget batches hold no token (attention_mask is all 0)")
    return [LayerProblem(l, units[l], torch.cat([a for a, _ in pieces[l]]), torch.cat([y for _, y in pieces[l]]))
            for l in range(n_layers)]


def fit_region(problems: Sequence[LayerProblem], region: Mask,
               ridge: float = RIDGE) -> tuple[dict[int, torch.Tensor], list[dict]]:
    """Fit every layer's target in the region's columns: ``({layer: D}, rows)``, one row per
    layer with the :data:`LAYER_COLUMNS` that need no model (all but region, draw and
    ``value_norm``, the Frobenius norm of the selected value vectors before the change)."""
    if len(problems) != region.signature.n_layers:
        raise MaskError(f"region {region.name!r} has {region.signature.n_layers} layers, the "
                        f"problems {len(problems)}")
    fits, rows = {}, []
    for problem, units in zip(problems, region.units):
        a = problem.columns(units)
        delta, lam = ridge_fit(a, problem.target, ridge)
        fits[problem.layer] = delta
        rows.append({"layer": problem.layer, "n_units": int(units.size), "n_tokens": int(a.shape[0]),
                     "lam": lam, "target_sq_norm": float(problem.target.square().sum()),
                     "residual_fraction": residual_fraction(a, problem.target, delta),
                     "delta_norm": float(delta.norm())})
    return fits, rows


@contextmanager
def fitted(model: torch.nn.Module, region: Mask, fits: dict[int, torch.Tensor]) -> Iterator[torch.nn.Module]:
    """``model`` with each layer's selected value vectors changed by its fit ``D`` (rows of the
    value matrix += ``D^T``, cast to the model dtype); the original vectors are put back
    exactly on exit."""
    adapter = adapter_for(model)
    region.check_fits(adapter.signature)
    saved = {}
    with torch.no_grad():
        try:
            for layer, delta in fits.items():
                values = adapter.value_matrix(layer)
                index = _index(region.units[layer], values.device)
                saved[layer] = (index, values[index].clone())
                values[index] += delta.T.to(values.device, values.dtype)
            yield model
        finally:
            for layer, (index, original) in saved.items():
                adapter.value_matrix(layer)[index] = original


def _index(units: np.ndarray, device: torch.device) -> torch.Tensor:
    """A long tensor of mask units (copied: mask arrays are read-only)."""
    return torch.tensor(units.tolist(), dtype=torch.long, device=device)


def random_regions(v_tgt: Mask, draws: int, seed: int) -> list[Mask]:
    """``draws`` layer-matched random regions outside V_tgt (same count per layer as V_tgt),
    draw k from ``numpy.random.default_rng([seed, k])``; named ``random_<k>``. Outside
    V_tgt as the seed paper's Random condition (an equal-size region from the complement)."""
    if draws < 1:
        raise MaskError(f"layer fit: draws must be >= 1, got {draws}")
    return [layer_matched_random(v_tgt, np.random.default_rng([seed, k]), disjoint=True,
                                 name=f"random_{k}") for k in range(draws)]


def layer_fit(theta_o: torch.nn.Module, theta_r: torch.nn.Module, tokenizer, splits: QASplits,
              v_tgt: Mask, max_length: int, draws: int = 3, seed: int = 0, ridge: float = RIDGE,
              batch_size: int = 16, progress: Callable[[str], None] | None = None) -> LayerFit:
    """The layer-wise analysis on a testbed's models and data (see the module docstring).

    Regions: V_tgt (``oracle``, draw 0) and :func:`random_regions` (``random``, draws 0..K-1).
    ``summary``: per fitted model the unweighted mean of its layers' residual fractions and
    its ES, FS and RS; also theta_o and theta_r unchanged (``mean_residual_fraction`` NaN).
    """
    from causalloc.testbed import evaluate_es

    say = progress or (lambda message: None)
    pid = pad_id(tokenizer)
    batches = eval_batches(encode_items(tokenizer, splits.forget, max_length), pid, batch_size)
    randoms = random_regions(v_tgt, draws, seed)
    regions = [("oracle", 0, v_tgt), *(("random", k, mask) for k, mask in enumerate(randoms))]
    say(f"collecting MLP activations and targets on {len(splits.forget)} forget examples")
    problems = collect_problems(theta_o, theta_r, batches, [v_tgt, *randoms])
    layer_rows, summary_rows = [], []
    adapter = adapter_for(theta_o)
    for kind, draw, region in regions:
        fits, rows = fit_region(problems, region, ridge)
        for row in rows:
            values = adapter.value_matrix(row["layer"]).detach()
            row["value_norm"] = float(values[_index(region.units[row["layer"]], values.device)].double().norm())
        layer_rows += [{"region": kind, "draw": draw, **row} for row in rows]
        with fitted(theta_o, region, fits) as model:
            scores = evaluate_es(model, tokenizer, splits, max_length)
        mean_residual = float(np.nanmean([row["residual_fraction"] for row in rows]))
        say(f"{region.name}: mean residual fraction {mean_residual:.4f}, ES forget "
            f"{scores['es_forget']:.3f}, ES retain {scores['es_retain']:.3f}")
        summary_rows.append({"region": kind, "draw": draw, "n_units": region.size,
                             "mean_residual_fraction": mean_residual, **scores})
    for name, model in (("theta_o", theta_o), ("theta_r", theta_r)):
        summary_rows.append({"region": name, "draw": 0, "n_units": 0, "mean_residual_fraction": float("nan"),
                             **evaluate_es(model, tokenizer, splits, max_length)})
    summary = pd.DataFrame(summary_rows).assign(fs=lambda t: 1 - t["es_forget"], rs=lambda t: t["es_retain"])
    return LayerFit(pd.DataFrame(layer_rows, columns=LAYER_COLUMNS), summary[SUMMARY_COLUMNS],
                    [v_tgt, *randoms], ridge, int(problems[0].activations.shape[0]))


__all__ = ["LAYER_COLUMNS", "RIDGE", "SUMMARY_COLUMNS", "LayerFit", "LayerProblem", "collect_problems",
           "fit_region", "fitted", "layer_fit", "random_regions", "residual_fraction", "ridge_fit"]
