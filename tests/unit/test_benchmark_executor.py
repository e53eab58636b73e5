"""The executor benchmark on a seconds-scale testbed: its JSON report, the agreement of the
naive reference with causalloc's executor, and the reference-forward cache behind the speed."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import executor
import naive_reference

from causalloc.data.collate import collate
from causalloc.masks import uniform_random
from causalloc.metrics import extraction_strength
from causalloc.runs.worker import TestbedState
from causalloc.testbed import build_testbed, config_for
from causalloc.unlearn import TrainConfig, UnlearnData, make_objective, unlearn
from causalloc.unlearn.runner import ReferenceCache
from tests.conftest import tiny_llama
from tests.unit.test_testbed import SMALL as SMALL_TESTBED

#: the unit tests' small testbed, which carries the knowledge (tests/unit/test_testbed.py)
BUILD = {k: v for k, v in SMALL_TESTBED.items() if k not in ("n_authors", "n_forget_authors", "n_questions")}
SMALL = ["--authors", str(SMALL_TESTBED["n_authors"]), "--forget-authors",
         str(SMALL_TESTBED["n_forget_authors"]), "--questions", str(SMALL_TESTBED["n_questions"])] + [
    arg for key, value in BUILD.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


@pytest.mark.slow  # ~2 min on the knowledge-carrying testbed: the naive ES generates from every prefix
def test_benchmark_report_keys_and_all_paths_agree(capsys):
    report = executor.main(SMALL + ["--json", "--runs", "2", "--steps", "3", "--eval-every", "2",
                                    "--batch-size", "4", "--lr", "1e-2", "--repeats", "2"])
    for key in ("runs_per_hour_causalloc", "runs_per_hour_naive", "runs_per_hour_naive_generate_es",
                "ratio", "ratio_generate_es", "ratio_train", "peak_rss_mb"):
        assert np.isfinite(report[key]) and report[key] > 0, key
    first, second = report["repeats"]
    # the reference with ES by generation runs in the first repeat only (--generate-es-repeats 1)
    assert first["ratio_generate_es"] == pytest.approx(first["runs_per_hour_causalloc"]
                                                       / first["runs_per_hour_naive_generate_es"])
    assert "ratio_generate_es" not in second and report["ratio_generate_es"] == first["ratio_generate_es"]
    for repeat in (first, second):
        assert repeat["ratio"] == pytest.approx(repeat["runs_per_hour_causalloc"] / repeat["runs_per_hour_naive"])
        assert repeat["ratio_train"] == pytest.approx(repeat["seconds"]["naive"]["train"]
                                                      / repeat["seconds"]["causalloc"]["train"])
    assert report["ratio"] == pytest.approx(np.median([first["ratio"], second["ratio"]]))
    assert report["settings"]["objective"] == "npo" and report["settings"]["runs"] == 2
    assert set(report["settings"]["load"]) == {"1min", "5min", "15min", "cpus"}
    assert len(report["runs"]) == 2
    # one-pass ES (both forms) equals ES by generation on theta_o; all paths hard-constrained
    assert report["initial_es_equal"]
    assert all(r["max_abs_change_outside_mask"] == [0.0, 0.0, 0.0] for r in report["runs"])
    # same data, steps, optimizer: the trained models agree up to float rounding
    assert report["max_abs_metric_difference"] < 0.05
    assert '"ratio_generate_es"' in capsys.readouterr().out


class _Predicts(torch.nn.Module):
    """A stand-in model whose argmax is the next answer token at a seeded 80% of positions."""

    def __init__(self, batch):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        generator = torch.Generator().manual_seed(0)
        labels = batch["labels"]
        self.logits = torch.randn(*labels.shape, 50, generator=generator)
        right = torch.rand(labels[:, 1:].shape, generator=generator) < 0.8
        rows, positions = (right & (labels[:, 1:] >= 0)).nonzero(as_tuple=True)
        self.logits[rows, positions, labels[rows, positions + 1]] += 10.0

    def forward(self, input_ids, attention_mask, labels=None):
        return SimpleNamespace(logits=self.logits)


def test_naive_one_pass_es_equals_causalloc_one_pass_es():
    examples = [{"input_ids": list(range(1, 4 + n)), "labels": [-100] * 3 + list(range(4, 4 + n))}
                for n in range(1, 12)] * 3
    batch = collate(examples, 0)
    model = _Predicts(batch)
    naive = naive_reference.es_one_pass(model, batch)
    assert len(set(naive.tolist())) > 5 and 0.0 in naive and 1.0 in naive
    np.testing.assert_array_equal(naive, extraction_strength(model, batch))


def test_naive_gradient_masks_select_exactly_the_mask():
    model = tiny_llama()
    from causalloc.models.units import adapter_for

    signature = adapter_for(model).signature
    mask = uniform_random(signature, 0.25, np.random.default_rng(0))
    masks = naive_reference.gradient_masks(model, mask)
    assert sum(int(m.sum()) for m in masks.values()) == mask.size * signature.hidden
    for layer in range(signature.n_layers):
        columns = masks[f"model.layers.{layer}.mlp.down_proj.weight"].bool().all(dim=0)
        assert sorted(columns.nonzero().flatten().tolist()) == sorted(mask.units[layer])


@pytest.mark.parametrize("objective", ["npo", "rmu"])  # logits; hidden states of the retain rows
def test_reference_cache_serves_identical_runs_and_respects_its_budget(objective):
    testbed = build_testbed(config_for("tiny", **SMALL_TESTBED))
    state = TestbedState(testbed, testbed.config.max_length)
    mask = uniform_random(state.signature, 0.2, np.random.default_rng(1))
    data = UnlearnData(state.forget, state.retain, state.pad, state.refusal)
    config = TrainConfig(steps=6, lr=1e-2, batch_size=4, seed=5)

    def losses(cache):
        result, _ = unlearn(state.model, mask, make_objective(objective), data, config,
                            snapshot=state.snapshot, reference_cache=cache)
        return result.losses

    plain = losses(None)
    cache = ReferenceCache()
    cache.scope("block")
    first = losses(cache)
    # rows served from the batch they first appeared in: equal to float rounding
    assert first == pytest.approx(plain, rel=1e-6, abs=1e-6)
    if objective == "npo":  # 6 forget rows in batches of 4: later epochs are served from the store
        assert cache.hits > 0 and 0 < cache.misses < 6
    misses = cache.misses
    assert losses(cache) == first and cache.misses == misses  # a later run: no forward, bitwise the same
    cache.scope("another block")
    assert cache.bytes == 0
    tight = ReferenceCache(max_bytes=1)
    assert losses(tight) == plain and tight.bytes == 0 and tight.hits == 0  # nothing fits: all recomputed


def test_train_step_benchmark_variants_agree_with_the_full_forward():
    import train_step

    report = train_step.main(SMALL + ["--json", "--steps", "4", "--batch-size", "4"])
    for variant in ("full", "scored", "scored_one_pass"):
        assert report[f"ms_per_step_{variant}"] > 0
    for variant in ("scored", "scored_one_pass"):
        assert report[f"ratio_{variant}"] > 0
        assert report[f"max_abs_loss_difference_{variant}"] < 1e-4
    assert 0 < report["scored_fraction"] < 1 and 0 <= report["padding_fraction"] < 1
