"""The real run function end to end on a seconds-scale testbed."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from causalloc.data.collate import eval_batches
from causalloc.metrics import extraction_strength
from causalloc.runs import RunStore, execute_design
from causalloc.runs import worker as worker_module
from causalloc.runs.backends import WorkerContext
from causalloc.runs.design import expand
from causalloc.runs.spec import load_spec
from causalloc.testbed import build_testbed, config_for
from tests.unit.test_testbed import SMALL

SPEC = """
seeds = [0, 1]
budgets = [0.1]
k_random = 2

[testbed]
kind = "tiny"
{testbed}

[testbed.build]
{build}

[[conditions]]
strategy = "oracle"

[[conditions]]
strategy = "random"

[[conditions]]
strategy = "disjoint:oracle"

[[conditions]]
strategy = "attributed:activations"

[[conditions]]
strategy = "overlap:0.5"

[[algorithms]]
name = "npo"
steps = 4
lr = 1e-2
batch_size = 4

[[algorithms]]
name = "dpo"
steps = 3
lr = 1e-2
batch_size = 4

[eval]
every = 2
metrics = ["aues", "fs_at_rs95", "fs_final", "rs_final", "log_forget_quality", "mu95",
           "model_utility", "relearn_es", "relearn_recovery"]

[relearn]
steps = 2
lr = 1e-3
fraction = 0.5
""".format(
    testbed="\n".join(f"{k} = {SMALL[k]}" for k in ("n_authors", "n_forget_authors", "n_questions")),
    build="\n".join(f"{k} = {v}" for k, v in SMALL.items()
                     if k not in ("n_authors", "n_forget_authors", "n_questions")))


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "small.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


def _table(spec_file, out):
    summary = execute_design(spec_file, out, workers=0, progress=False)
    assert summary["failed"] == 0, summary
    return pd.read_csv(out / "runs.csv")


def test_runs_are_hard_constrained_matched_and_reproducible(spec_file, tmp_path):
    first = _table(spec_file, tmp_path / "a")
    assert len(first) == 2 * 2 * (1 + 2 + 2 + 1 + 2)
    assert (first["status"] == "done").all()
    assert (first["max_abs_change_outside_mask"] == 0.0).all()
    assert first[["aues", "fs_at_rs95", "fs_final", "rs_final", "relearn_es"]].notna().all().all()
    by_condition = first.groupby("condition")["overlap_with_oracle"]
    assert (by_condition.min()["oracle"], by_condition.max()["disjoint:oracle"]) == (1.0, 0.0)
    n_target = round(0.1 * SMALL["layers"] * SMALL["intermediate"])
    assert by_condition.min()["overlap:0.5"] == by_condition.max()["overlap:0.5"] == pytest.approx(
        round(0.5 * n_target) / n_target)
    assert first["mask_size"].nunique() == 1
    # theta_o knows the forget set (FS ~0 at step 0), so forgetting is measurable, and it
    # happens under the oracle mask
    start = first["trajectory"].map(lambda t: json.loads(t)[0]["fs"])
    assert (start <= 0.1).all()
    oracle = first[first["condition"] == "oracle"]
    assert (oracle["fs_final"] > start[oracle.index] + 0.05).any()
    assert first["theta_o_fingerprint"].nunique() == 1
    second = _table(spec_file, tmp_path / "b")
    cols = ["run_id", "aues", "fs_final", "rs_final", "relearn_es", "log_forget_quality", "mu95",
            "model_utility"]
    pd.testing.assert_frame_equal(first[cols].sort_values("run_id").reset_index(drop=True),
                                  second[cols].sort_values("run_id").reset_index(drop=True))
    _check_model_utility_and_mu95(first)


#: one block, three conditions, one short NPO run each
ONE_BLOCK = SPEC.replace("seeds = [0, 1]", "seeds = [0]").replace("k_random = 2", "k_random = 1")
ONE_BLOCK = ONE_BLOCK[:ONE_BLOCK.index('[[conditions]]\nstrategy = "attributed')] + \
    ONE_BLOCK[ONE_BLOCK.index("[[algorithms]]"):ONE_BLOCK.index('[[algorithms]]\nname = "dpo"')] + \
    '[eval]\nevery = 2\nmetrics = ["aues", "fs_final"]\n'


def test_a_data_order_that_depends_on_the_mask_is_caught(tmp_path, monkeypatch):
    """Mutation: the worker's training seed (data order and objective draws) depends on the
    mask, as a bug could make it. The executor's matching check must fail the runs."""
    spec = tmp_path / "one_block.toml"
    spec.write_text(ONE_BLOCK)
    summary = execute_design(spec, tmp_path / "matched", workers=0, progress=False)
    assert (summary["done"], summary["failed"]) == (3, 0)
    real_unlearn = worker_module.unlearn

    def mask_dependent_unlearn(model, mask, objective, data, config, *args, **kwargs):
        config = dataclasses.replace(config, seed=config.seed + int(mask.hash()[:6], 16))
        return real_unlearn(model, mask, objective, data, config, *args, **kwargs)

    monkeypatch.setattr(worker_module, "unlearn", mask_dependent_unlearn)
    summary = execute_design(spec, tmp_path / "broken", workers=0, progress=False)
    assert (summary["done"], summary["failed"]) == (1, 2)  # the first run of the block sets the digest
    with RunStore(tmp_path / "broken") as store:
        for row in store.failed():
            assert row["error"].startswith("ConstraintError: matching broken: this run's data order")


def test_relearning_attack_leaves_the_shared_theta_o_bitwise_intact(spec_file):
    run = next(r for r in expand(load_spec(spec_file)) if r["condition"] == "oracle")
    context = WorkerContext(out_dir=".", threads=1)
    result = worker_module.execute(run, context)
    assert result["metrics"]["relearn_es"] >= 0 and result["max_abs_change_outside_mask"] == 0.0
    (state,) = context.cache.values()
    assert state.snapshot.changed(state.model) == []  # every tensor bitwise theta_o again
    assert not any(p.requires_grad for p in state.model.parameters()) and not state.model.training
    assert result["theta_o_fingerprint"] == state.testbed.theta_o_fingerprint
    _check_relearn_recovery(run, state)


def test_probes_from_the_matched_checkpoint_leave_theta_o_bitwise_intact(spec_file):
    """[relearn] strengths + start = fs_at_rs95 + quant_recovery: the attacks start from the
    checkpoint that defines FS@RS95, theta_o is bitwise intact afterwards, and the 4-bit
    rounding of theta_o itself is recorded."""
    run = next(r for r in expand(load_spec(spec_file)) if r["condition"] == "oracle")
    run = {**run, "relearn": {**run["relearn"], "strengths": [[2, 1e-3], [3, 1e-2]],
                              "start": "fs_at_rs95"},
           "eval": {**run["eval"], "metrics": ["fs_at_rs95", "relearn_recovery_s2_lr0.001",
                                               "relearn_recovery_s3_lr0.01", "quant_recovery"]}}
    context = WorkerContext(out_dir=".", threads=1)
    result = worker_module.execute(run, context)
    (state,) = context.cache.values()
    assert state.snapshot.changed(state.model) == []
    start = result["attack_start"]
    assert start["rule"] == "fs_at_rs95" and 1.0 - start["fs"] <= 1.0
    assert start["fs"] == pytest.approx(result["metrics"]["fs_at_rs95"])
    assert set(result["metrics"]) == {"fs_at_rs95", "relearn_recovery_s2_lr0.001",
                                      "relearn_recovery_s3_lr0.01", "quant_recovery"}
    assert all(np.isfinite(v) for v in result["metrics"].values())
    quant = result["quant_theta_o"]
    assert quant["bits"] == 4 and quant["es_retain"] == pytest.approx(state.scores()["rs"])

    class NothingLearned:
        def merge_into(self, model):
            pass

    # each probe restores the model itself (not only the theta_o record computed after it)
    assert worker_module._quant_recovery(state, NothingLearned()) == pytest.approx(
        quant["es_forget_quantized"] - quant["es_forget"])
    assert state.snapshot.changed(state.model) == []


def test_a_bfloat16_run_on_a_float32_testbed_is_exact_and_restores_theta_o_bitwise(spec_file):
    """[testbed] run_dtype = "bfloat16": theta_o and theta_r are loaded in bfloat16 from the
    float32 testbed (the same cached testbed), the snapshot converts the saved float32 theta_o
    as loading does, so the relearning attack's restore is bitwise and nothing outside the mask
    moves; a float32 run in the same worker gets its own state."""
    spec = load_spec(spec_file)
    bf16 = dataclasses.replace(spec, testbed=dataclasses.replace(spec.testbed, run_dtype="bfloat16"))
    metrics = {"metrics": ["aues", "log_forget_quality", "relearn_es", "relearn_recovery"]}
    run_bf16, run_fp32 = ({**run, "eval": {**run["eval"], **metrics}}
                          for run in (expand(bf16)[0], expand(spec)[0]))
    assert run_bf16["testbed"]["run_dtype"] == "bfloat16" and run_bf16["condition"] == "oracle"
    context = WorkerContext(out_dir=".", threads=1)
    result = worker_module.execute(run_bf16, context)
    (state,) = context.cache.values()
    assert {p.dtype for p in state.model.parameters()} == {torch.bfloat16}
    assert state.testbed.path == build_testbed(config_for("tiny", **SMALL)).path
    assert result["max_abs_change_outside_mask"] == 0.0
    assert state.snapshot.changed(state.model) == []  # restored bitwise after the attack
    assert all(np.isfinite(v) for v in result["metrics"].values())
    expected = state.testbed.load_model("theta_o").to(torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(state.model.parameters(), expected.parameters()))
    worker_module.execute(run_fp32, context)
    dtypes = {next(s.model.parameters()).dtype for s in context.cache.values()}
    assert dtypes == {torch.bfloat16, torch.float32}


def _check_relearn_recovery(run, state):
    """relearn_recovery = held-out forget ES after the attack minus before it; with nothing
    unlearned (columns that merge nothing) "before" is theta_o's ES on the held-out items."""
    class NothingLearned:
        def merge_into(self, model):
            pass

    spec = run["relearn"]
    order = np.random.default_rng(spec["seed"]).permutation(len(state.forget))
    held_out = [state.forget[i] for i in order[round(spec["fraction"] * len(state.forget)):]]
    before = float(np.mean(extraction_strength(state.model, eval_batches(held_out, state.pad))))
    after, recovery = worker_module._relearn(spec, state, NothingLearned())
    assert recovery == pytest.approx(after - before, abs=1e-12) and after > 0.5  # not "after" alone


def test_a_run_on_a_modified_theta_o_fails_before_it_trains(spec_file, tmp_path, monkeypatch):
    testbed = build_testbed(config_for("tiny", **SMALL))
    copy = tmp_path / "testbeds" / testbed.path.name  # a cache of its own, then modified
    shutil.copytree(testbed.path, copy)
    weights = copy / "theta_o" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    tensors["model.norm.weight"][0] += 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path))
    run = expand(load_spec(spec_file))[0]
    with pytest.raises(Exception, match="theta_o fingerprint mismatch.*modified after it was built"):
        worker_module.execute(run, WorkerContext(out_dir=".", threads=1))


def _check_model_utility_and_mu95(table):
    """Every checkpoint carries model utility (mu) and log forget quality (lfq); MU95 is the
    best lfq among checkpoints keeping 95% of theta_o's utility (theta_o's step 0 always does)."""
    assert np.isfinite(table[["mu95", "model_utility"]]).all().all()
    theta_o = set()
    for _, row in table.iterrows():
        points = json.loads(row["trajectory"])
        assert points[0]["step"] == 0 and all({"mu", "lfq"} <= set(p) for p in points)
        theta_o.add((points[0]["mu"], points[0]["lfq"]))
        keep = [p["lfq"] for p in points if p["mu"] >= 0.95 * points[0]["mu"]]
        assert row["mu95"] == pytest.approx(max(keep))
        assert row["model_utility"] == pytest.approx(points[-1]["mu"])
    assert len(theta_o) == 1  # step 0 is theta_o for every run, scored once per testbed
    assert 0 < next(iter(theta_o))[0] <= 1


def test_run_save_masks_writes_the_masks_the_first_block_ran(tmp_path):
    from causalloc.cli import main
    from causalloc.masks import Mask

    spec = tmp_path / "one_block.toml"
    spec.write_text(ONE_BLOCK)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--workers", "0", "--no-progress", "--save-masks"]) == 0
    v_tgt = Mask.load(out / "masks" / "v_tgt.json")
    with RunStore(out) as store:
        ran = {r["run"]["condition"]: r["extra"]["mask_hash"] for r in store.rows("done")}
    for condition, mask_hash in ran.items():
        saved = Mask.load(out / "masks" / f"{condition.replace(':', '_')}.json")
        assert saved.hash() == mask_hash and saved.name == condition
    assert Mask.load(out / "masks" / "oracle.json").overlap(v_tgt) == v_tgt.size
    assert Mask.load(out / "masks" / "disjoint_oracle.json").overlap(v_tgt) == 0


def test_step0_and_theta_r_scores_come_from_the_build_record_only_where_it_holds(monkeypatch):
    """The build records theta_o's and theta_r's ES per item, equal to what a worker computes
    from the saved models (bitwise: the same pass on the same batches); a worker reads its
    step-0 and theta_r scores from it, selects a retain subset's values from it, and computes
    them when the record is for another dtype or is absent."""
    testbed = build_testbed(config_for("tiny", **SMALL))
    record = testbed.recorded_item_es()
    assert record is not None and record["n_forget"] == len(testbed.splits.forget)
    fresh = worker_module.TestbedState(testbed, testbed.config.max_length)
    theta_r = testbed.load_model("theta_r")
    np.testing.assert_array_equal(fresh._per_item(fresh.model), record["theta_o"])
    np.testing.assert_array_equal(fresh._per_item(theta_r), record["theta_r"])

    forwards = []
    original = worker_module.extraction_strength_per_item
    monkeypatch.setattr(worker_module, "extraction_strength_per_item",
                        lambda *args: forwards.append(1) or original(*args))
    subset = worker_module.TestbedState(testbed, testbed.config.max_length, retain_items={"n": 5, "seed": 0})
    scores, reference = subset.scores(0), subset.theta_r_scores()
    assert forwards == []  # read from the record, no forward pass
    n_forget = record["n_forget"]
    retain = np.asarray(record["theta_o"][n_forget:])[subset.scored_retain]
    assert scores == {"rs": pytest.approx(retain.mean(), abs=1e-15),
                      "fs": pytest.approx(1 - np.mean(record["theta_o"][:n_forget]), abs=1e-15)}
    assert reference["rs"] == pytest.approx(np.asarray(record["theta_r"][n_forget:])[subset.scored_retain].mean())

    bf16 = worker_module.TestbedState(testbed, testbed.config.max_length, run_dtype="bfloat16")
    bf16.scores(0), bf16.theta_r_scores()
    assert len(forwards) == 2  # the record holds for float32 only: both computed
    monkeypatch.setattr(type(testbed), "recorded_item_es", lambda self: None)
    before = worker_module.TestbedState(testbed, testbed.config.max_length)
    assert before.scores(0) == fresh._summarise(np.asarray(record["theta_o"])) and len(forwards) == 3
