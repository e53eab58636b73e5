"""Per-layer least-squares fits (``causalloc.layerfit``, ``causalloc layerfit``): the closed
form against an iterative solver, an exact fit where the change lies in the oracle columns,
refusal of regions made for another model, and the command's files."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from causalloc.cli import main
from causalloc.data.collate import eval_batches
from causalloc.errors import DataError, MaskError
from causalloc.layerfit import (
    LAYER_COLUMNS,
    SUMMARY_COLUMNS,
    collect_problems,
    fit_region,
    fitted,
    random_regions,
    residual_fraction,
    ridge_fit,
)
from causalloc.masks import Mask
from causalloc.models.units import ModelSignature, adapter_for
from causalloc.report.figures import layerfit_residuals
from tests.conftest import random_examples, tiny_llama
from tests.unit.test_testbed import FAST


def ridge_by_lbfgs(a: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """The ridge objective minimized iteratively (float64 L-BFGS to convergence)."""
    delta = torch.zeros(y.shape[1], a.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([delta], lr=1, max_iter=2000, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (a @ delta.T - y).square().sum() + lam * delta.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return delta.detach()


def test_closed_form_matches_an_iterative_solver():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(60, 12, dtype=torch.float64, generator=generator)
    a[:, 1] = a[:, 0] + 0.01 * a[:, 1]  # nearly collinear columns: lambda matters
    y = torch.randn(60, 5, dtype=torch.float64, generator=generator)
    delta, lam = ridge_fit(a, y, ridge=0.05)
    assert lam == pytest.approx(0.05 * float((a * a).sum()) / 12)
    np.testing.assert_allclose(delta.numpy(), ridge_by_lbfgs(a, y, lam).numpy(), rtol=1e-6, atol=1e-8)
    explicit = float((a @ delta.T - y).square().sum() / y.square().sum())
    assert residual_fraction(a, y, delta) == pytest.approx(explicit, rel=1e-12)
    assert 0 < explicit < 1


def test_nothing_to_fit_gives_no_change():
    y = torch.ones(4, 3, dtype=torch.float64)
    for a in (torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 0, dtype=torch.float64)):
        delta, lam = ridge_fit(a, y)
        assert lam == 0.0 and delta.shape == (3, a.shape[1]) and not delta.any()
        assert residual_fraction(a, y, delta) == 1.0


@pytest.fixture(scope="module")
def value_only_change():
    """theta_r: a tiny random LLaMA; theta_o: the same with 6 value vectors per layer (the
    region ``oracle``) moved by random vectors; forget batches of random tokens."""
    theta_r = tiny_llama(seed=0)
    theta_o = copy.deepcopy(theta_r)
    signature = adapter_for(theta_o).signature
    rng = np.random.default_rng(0)
    oracle = Mask(tuple(rng.choice(signature.n_units, 6, replace=False)
                        for _ in range(signature.n_layers)), signature, "oracle")
    adapter = adapter_for(theta_o)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer, units in enumerate(oracle.units):
            index = torch.tensor(units.tolist())
            adapter.value_matrix(layer)[index] += torch.randn(len(index), signature.hidden,
                                                              generator=generator)
    batches = eval_batches(random_examples(10, seed=2), pad_token_id=0, batch_size=4)
    return theta_o, theta_r, oracle, batches


def test_oracle_region_reaches_a_change_made_only_in_its_value_vectors(value_only_change):
    theta_o, theta_r, oracle, batches = value_only_change
    (random,) = random_regions(oracle, draws=1, seed=0)
    problems = collect_problems(theta_o, theta_r, batches, [oracle, random])
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert [p.activations.shape for p in problems] == [(tokens, 12)] * 2
    fits, rows = fit_region(problems, oracle)
    assert all(row["residual_fraction"] < 1e-8 for row in rows), rows
    assert all(row["residual_fraction"] > 0.05 for row in fit_region(problems, random)[1])
    before = {name: p.clone() for name, p in theta_o.state_dict().items()}
    probe = batches[0]
    with fitted(theta_o, oracle, fits) as model:  # the fit undoes the change: theta_r again
        logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    expected = theta_r(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(before[name], p) for name, p in theta_o.state_dict().items())


def test_region_made_for_another_model_is_refused(value_only_change):
    theta_o, theta_r, oracle, batches = value_only_change
    other = ModelSignature("llama", oracle.signature.n_layers, oracle.signature.n_units + 1,
                           oracle.signature.hidden)
    foreign = Mask(oracle.units, other, "foreign")
    with pytest.raises(MaskError, match="foreign was made for"):
        collect_problems(theta_o, theta_r, batches, [foreign])
    with pytest.raises(MaskError, match="foreign was made for"), fitted(theta_o, foreign, {}):
        pass
    with pytest.raises(MaskError, match="theta_o .* and theta_r .* differ"):
        collect_problems(theta_o, tiny_llama(layers=3), batches, [oracle])
    problems = collect_problems(theta_o, theta_r, batches, [oracle])
    (random,) = random_regions(oracle, draws=1, seed=0)
    with pytest.raises(MaskError, match="were not collected"):
        fit_region(problems, random)
    with pytest.raises(MaskError, match="draws must be >= 1"):
        random_regions(oracle, draws=0, seed=0)
    empty = [{**batches[0], "attention_mask": torch.zeros_like(batches[0]["attention_mask"])}]
    with pytest.raises(DataError, match="no token"):
        collect_problems(theta_o, theta_r, empty, [oracle])


def test_figure_needs_its_columns():
    with pytest.raises(DataError, match="lacks column.*residual_fraction"):
        layerfit_residuals(pd.DataFrame({"region": ["oracle"], "draw": [0], "layer": [0]}))


@pytest.fixture
def fast_cache(tmp_path_factory, monkeypatch):
    """The session's shared test cache (tests.unit.test_testbed.shared_cache's root)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("CAUSALLOC_CACHE", str(cache))
    return cache


def test_command_writes_tables_figure_and_report(fast_cache, tmp_path, capsys):
    torch.set_num_threads(1)
    testbed_args = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}")]
    out = tmp_path / "fit"
    code = main(["layerfit", "--draws", "2", "--seed", "5", "--out", str(out), "--json",
                 "--no-progress", *testbed_args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    layers = pd.read_csv(out / "layerfit.csv")
    summary = pd.read_csv(out / "layerfit_summary.csv")
    assert list(layers.columns) == LAYER_COLUMNS and list(summary.columns) == SUMMARY_COLUMNS
    n_layers = FAST["layers"]
    assert len(layers) == 3 * n_layers
    assert summary["region"].tolist() == ["oracle", "random", "random", "theta_o", "theta_r"]
    fitted_rows = summary.iloc[:3]
    means = layers.groupby(["region", "draw"], sort=False)["residual_fraction"].mean().to_numpy()
    np.testing.assert_allclose(fitted_rows["mean_residual_fraction"], means)
    np.testing.assert_allclose(summary["fs"], 1 - summary["es_forget"])
    oracle = Mask.load(out / "masks" / "oracle.json")
    for k in range(2):
        region = Mask.load(out / "masks" / f"random_{k}.json")
        assert region.overlap(oracle) == 0
        assert (region.per_layer_counts() == oracle.per_layer_counts()).all()
        assert record["regions"][k + 1]["rng_seed"] == [5, k]
    assert record["ridge"] == 1e-6 and record["seed"] == 5
    assert len(record["testbed"]["hash"]) == 64 and record["environment"]["commit"]
    assert json.loads((out / "layerfit.json").read_text())["summary"] == record["summary"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Per-layer least-squares fits")
    assert report.index("| region") < report.index("![") < report.index("## Setup")
    assert "norm_ratio_vtgt" in report and "weight_norm_precision" in report
    assert Image.open(out / "layerfit.png").size[0] > 500


def test_command_refuses_bad_options(tmp_path, capsys):
    assert main(["layerfit", "--draws", "0", "--out", str(tmp_path)]) == 2
    assert "--draws: must be >= 1" in capsys.readouterr().err
    assert main(["layerfit", "--ridge", "0", "--out", str(tmp_path)]) == 2
    assert "--ridge: must be > 0" in capsys.readouterr().err
