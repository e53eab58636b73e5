"""``causalloc localize`` on the seconds-scale testbed: files, exact sizes, accuracy numbers
recomputed by hand, and exit code 2 with a named problem for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from causalloc.attribution import localize
from causalloc.cli import main
from causalloc.data.collate import encode_items, eval_batches, pad_id
from causalloc.masks import Mask
from causalloc.runs.worker import TestbedState, build_mask
from causalloc.testbed import build_testbed, config_for
from tests.unit.test_testbed import SMALL

TESTBED_ARGS = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
METHODS = ["activations", "random"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The cache test_worker uses too, so the SMALL testbed is built once per session."""
    return tmp_path_factory.getbasetemp() / "cache"


@pytest.fixture(scope="module")
def testbed(cache):
    torch.set_num_threads(1)
    return build_testbed(config_for("tiny", **SMALL), cache_dir=cache / "testbeds")


@pytest.fixture(autouse=True)
def _cache_env(cache, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(cache))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["localize", *args, *TESTBED_ARGS])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def top_units(scores: np.ndarray, count: int) -> set[int]:
    """Flat indices of the ``count`` highest scores, ties to the lower index."""
    return set(np.argsort(-scores.ravel(), kind="stable")[:count].tolist())


def test_two_methods_write_masks_scores_and_accuracy(testbed, tmp_path, capsys):
    out = tmp_path / "loc"
    code, stdout, stderr = run_cli(capsys, "--method", ",".join(METHODS), "--budget", "0.05",
                                   "--seed", "3", "--out", str(out))
    assert code == 0, stderr
    v_tgt = testbed.v_tgt
    truth = set(v_tgt.flat().tolist())
    count = round(0.05 * v_tgt.signature.total_units)
    assert Mask.load(out / "masks" / "oracle.json") == v_tgt
    accuracy = pd.read_csv(out / "accuracy.csv")
    layers = pd.read_csv(out / "layers.csv")
    overlap = pd.read_csv(out / "overlap.csv")
    for method in METHODS:
        mask = Mask.load(out / method / "mask.json")
        assert Mask.load(out / "masks" / f"{method}.json") == mask
        assert mask.size == count and mask.meta["seed"] == 3
        scores = np.load(out / method / "scores.npy")
        assert scores.shape == (v_tgt.signature.n_layers, v_tgt.signature.n_units)
        assert set(mask.flat().tolist()) == top_units(scores, count)
        table = pd.read_csv(out / method / "scores.csv")
        assert len(table) == scores.size and table["selected"].sum() == count
        np.testing.assert_array_equal(table["score"].to_numpy(), scores.ravel())

        rows = accuracy[accuracy["method"] == method].set_index("selection")
        for selection, units in (("requested", set(mask.flat().tolist())),
                                 ("equal_budget", top_units(scores, v_tgt.size))):
            hits = len(units & truth)
            row = rows.loc[selection]
            assert (row["size"], row["hits"]) == (len(units), hits)
            assert row["precision"] == pytest.approx(hits / len(units))
            assert row["recall"] == pytest.approx(hits / len(truth))
            assert row["jaccard"] == pytest.approx(hits / len(units | truth))
            assert row["chance_precision"] == pytest.approx(len(truth) / v_tgt.signature.total_units)
        assert rows.loc["equal_budget", "precision"] == rows.loc["equal_budget", "recall"]

        counts = layers[layers["mask"] == method].sort_values("layer")["count"].tolist()
        assert counts == mask.per_layer_counts().tolist()
        pair = overlap[(overlap["mask_a"] == method) & (overlap["mask_b"] == "oracle")].iloc[0]
        assert pair["shared"] == len(set(mask.flat().tolist()) & truth)
        assert method in stdout
    assert layers[layers["mask"] == "oracle"]["count"].sum() == v_tgt.size

    # the CLI scores exactly what localize() scores on theta_o with the testbed's data
    tokenizer = testbed.tokenizer()
    batches = {split: eval_batches(encode_items(tokenizer, getattr(testbed.splits, split),
                                                testbed.config.max_length), pad_id(tokenizer), 16)
               for split in ("forget", "retain")}
    direct = localize("activations", testbed.load_model(), batches["forget"], batches["retain"],
                      0.05, seed=3)
    np.testing.assert_array_equal(direct.scores, np.load(out / "activations" / "scores.npy"))
    # and the mask a run's worker makes for attributed:activations (one library builds both inputs)
    state = TestbedState(testbed, testbed.config.max_length)
    spec = {"kind": "attributed", "method": "activations", "seed": 3, "hyper": {}}
    assert set(build_mask(spec, 0.05, state).flat().tolist()) == set(
        Mask.load(out / "activations" / "mask.json").flat().tolist())


def test_cli_batches_as_runs_do():
    import argparse

    from causalloc.attribution.inputs import BATCH_SIZE
    from causalloc.cli import localize as localize_cli

    parser = argparse.ArgumentParser()
    localize_cli.register(parser.add_subparsers())
    assert parser.parse_args(["localize", "--method", "x", "--out", "o"]).batch_size == BATCH_SIZE


def test_default_budget_is_v_tgt_and_json_summary(testbed, tmp_path, capsys):
    out = tmp_path / "loc"
    code, stdout, _ = run_cli(capsys, "--method", "random", "--per-layer", "--json",
                              "--no-progress", "--out", str(out))
    assert code == 0
    summary = json.loads(stdout)
    assert summary == json.loads((out / "localize.json").read_text())
    assert summary["count"] == summary["reference_size"] == testbed.v_tgt.size
    method = summary["methods"]["random"]
    assert method["accuracy"] == {**method["accuracy_equal_budget"], "hits": method["accuracy"]["hits"]}
    assert method["accuracy"]["precision"] == method["accuracy"]["recall"]
    per_layer = method["per_layer_counts"]
    assert sum(per_layer) == testbed.v_tgt.size and max(per_layer) - min(per_layer) <= 1
    assert list(pd.read_csv(out / "accuracy.csv")["selection"]) == ["requested"]
    code, _, stderr = run_cli(capsys, "--method", "activations", "--no-progress", "--out", str(out))
    assert code == 0 and "masks/random.json" in stderr  # a leftover mask is pointed out


def test_weight_norm_reports_its_precision_vs_v_tgt(testbed, tmp_path, capsys):
    """The trivial baseline through the CLI: at the testbed budget its precision is the
    testbed's own ``weight_norm_precision`` diagnostic (same ranking, same V_tgt)."""
    out = tmp_path / "loc"
    code, stdout, stderr = run_cli(capsys, "--method", "weight_norm", "--budget", "0.1", "--json",
                                   "--no-progress", "--out", str(out))
    assert code == 0, stderr
    accuracy = json.loads(stdout)["methods"]["weight_norm"]["accuracy"]
    assert accuracy["precision"] == pytest.approx(testbed.diagnostics["weight_norm_precision"])
    scores = np.load(out / "weight_norm" / "scores.npy")
    norms = np.stack([layer.mlp.down_proj.weight.detach().norm(dim=0).numpy()
                      for layer in testbed.load_model().model.layers])
    np.testing.assert_allclose(scores, norms, rtol=1e-6)


@pytest.mark.parametrize("args, problem", [
    (["--method", "activatons"], "activatons"),
    (["--method", ","], "--method"),
    (["--method", "random", "--budget", "abc"], "--budget"),
    (["--method", "random", "--budget", "0"], "--budget"),
    (["--method", "random", "--budget", "1.5"], "--budget"),
    (["--method", "random", "--budget", "100000"], "100000"),
    (["--method", "random", "--hyper", "random.bogus=1"], "bogus"),
    (["--method", "random", "--hyper", "wagle.alpha=1"], "wagle"),
    (["--method", "random", "--set", "hiden=3"], "hiden"),
    (["--method", "random", "--testbed", "huge"], "huge"),
    (["--method", "random", "--testbed", "tofu"], "tofu_path"),
    (["--method", "random", "--budget", "5", "--model-dir", "nowhere"], "--testbed and --set"),
    (["--method", "random", "--batch-size", "0"], "--batch-size"),
])
def test_bad_input_exits_2_naming_the_problem(testbed, tmp_path, capsys, args, problem):
    code, _, stderr = run_cli(capsys, *args, "--no-progress", "--out", str(tmp_path / "x"))
    assert code == 2
    assert "causalloc localize: error:" in stderr and problem in stderr


def test_model_dir_on_tofu_writes_masks_without_accuracy(testbed, tofu_dir, tmp_path, capsys):
    from causalloc.models.loading import save_model

    model_dir = save_model(testbed.load_model(), testbed.tokenizer(), tmp_path / "theta_o")
    out = tmp_path / "loc"
    base = ["localize", "--method", "activations", "--model-dir", str(model_dir), "--out", str(out)]
    assert main(base + ["--budget", "10"]) == 2 and "--tofu-path" in capsys.readouterr().err
    assert main(base + ["--tofu-path", str(tofu_dir)]) == 2 and "--budget" in capsys.readouterr().err
    code = main(["localize", "--method", "activations", "--budget", "10", "--model-dir",
                 str(model_dir), "--tofu-path", str(tofu_dir), "--authors", "4", "--max-length",
                 "48", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert Mask.load(out / "activations" / "mask.json").size == 10
    assert not (out / "accuracy.csv").exists() and not (out / "masks" / "oracle.json").exists()
    summary = json.loads((out / "localize.json").read_text())
    assert (summary["n_forget"], summary["n_retain"]) == (40, 40)
