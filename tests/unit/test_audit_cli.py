"""`causalloc audit` end to end (published figures, --runs) and `causalloc import`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW

from causalloc.cli import main
from causalloc.errors import DataError, SpecError
from causalloc.importers.open_unlearning import import_runs

ROOT = Path(__file__).resolve().parents[2]
LEE = ROOT / "data" / "claims" / "lee2025.yaml"


def rebuilt(mean: float, sd: float, n: int) -> np.ndarray:
    z = np.linspace(-1, 1, n) ** 3
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


@pytest.fixture(scope="module")
def lee_audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    assert main(["audit", str(LEE), "--out", str(out)]) == 0
    return out, json.loads((out / "audit.json").read_text())


def test_audit_of_published_figures_agrees_with_scipy_and_statsmodels(lee_audit):
    out, document = lee_audit
    raw = yaml.safe_load(LEE.read_text())
    rows = [c for c in raw["claims"] if c["id"].startswith("lee2025-t2-")]
    entries = {e["id"]: e for e in document["claims"]}
    assert len(rows) == 16 and len(entries) == 22
    for row in rows:
        entry = entries[row["id"]]
        a, b, delta = (row["published"][k] for k in ("a", "b", "abs_delta"))
        x, y = rebuilt(a["mean"], a["spread"], 5), rebuilt(b["mean"], b["spread"], 5)
        assert entry["welch_p"] == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue)
        mean_d = a["mean"] - b["mean"]
        sum_sq = 4 * delta["sd"] ** 2 + 5 * delta["mean"] ** 2
        d = rebuilt(mean_d, np.sqrt((sum_sq - 5 * mean_d**2) / 4), 5)
        assert entry["paired_p"] == pytest.approx(DescrStatsW(d).ttest_mean(0)[1])
        for key in ("tost_margin_min_welch", "tost_margin_min_paired", "mde80",
                    "reported_p_consistent_with", "verdict_published", "verdict"):
            assert key in entry
        assert entry["verdict_runs"] is None
    for entry in entries.values():
        if entry["evidence"] == "means_only":
            assert entry["paired_p"] is None and "not testable" in entry["reason_published"]
    summary = document["summary"]
    assert summary["equivalent_paired"]["of"] == 16 and summary["equivalent_welch"]["of"] == 16
    html = (out / "audit.html").read_text()
    assert "data:image/png;base64," in html and "lee2025-t2-olmo-rmu-mu95" in html
    assert "lee2025-t2-llama-wga-aues" in (out / "audit.md").read_text()
    for name in ("forest_aues.png", "forest_aues.pdf", "forest_mu95.png", "forest_mu95.pdf"):
        assert (out / "figures" / name).stat().st_size > 0


def synthetic_run_folder(folder: Path) -> Path:
    """8 seeds x 4 algorithms x (oracle, disjoint:oracle, random): WGA oracle = complement
    (equivalent), NPO oracle 0.1 better (different), DPO/RMU oracle -+0.05 by seed parity
    (mean 0 with an sd too large for TOST: inconclusive)."""
    rng = np.random.default_rng(0)
    rows = []
    for algorithm, shift, noise in (("wga", 0.0, 0.001), ("npo", 0.1, 0.005),
                                    ("dpo", 0.05, 0.0), ("rmu", 0.05, 0.0)):
        for seed in range(8):
            base = 0.5 + rng.normal(0, 0.02)
            sign = -1 if algorithm in ("dpo", "rmu") and seed % 2 else 1
            for condition, value in (("oracle", base + sign * shift + rng.normal(0, noise)),
                                     ("disjoint:oracle", base), ("random", base + 0.01)):
                rows.append({"model": "tiny", "data": "gen", "algorithm": algorithm,
                             "budget": 0.1, "seed": seed, "condition": condition,
                             "status": "done", "aues": value})
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    (folder / "design.json").write_text(json.dumps({
        "block_columns": ["model", "data", "algorithm", "budget", "seed"],
        "condition_column": "condition", "replicate": "seed", "draw_column": None,
        "metrics": ["aues"]}))
    return folder


def test_audit_with_runs_fills_verdict_runs(tmp_path):
    runs = synthetic_run_folder(tmp_path / "runs")
    out = tmp_path / "audit"
    assert main(["audit", str(LEE), "--runs", str(runs), "--out", str(out)]) == 0
    entries = {e["id"]: e for e in json.loads((out / "audit.json").read_text())["claims"]}
    for model in ("llama", "olmo"):
        assert entries[f"lee2025-t2-{model}-wga-aues"]["verdict_runs"] == "supported"
        npo = entries[f"lee2025-t2-{model}-npo-aues"]
        assert npo["verdict_runs"] == "contradicted" and npo["verdict"] == "contradicted"
        assert entries[f"lee2025-t2-{model}-dpo-aues"]["verdict_runs"] == "not_determined"
        mu95 = entries[f"lee2025-t2-{model}-wga-mu95"]
        assert mu95["verdict_runs"] is None and "mu95" in mu95["reason_runs"]
    wga = entries["lee2025-t2-llama-wga-aues"]["runs_comparisons"]
    assert len(wga) == 1 and wga[0]["cell"]["algorithm"] == "wga" and wga[0]["n_blocks"] == 8
    assert "no condition" in entries["lee2025-t1-wagle-aues"]["reason_runs"]


def write_ou_run(root: Path, name: str, handler: str, seed: int, summary: dict | None,
                 checkpoints: dict[int, dict] | None = None) -> Path:
    """One open-unlearning run folder as the framework writes it."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"task_name": name, "forget_split": "forget10", "retain_split": "retain90",
              "model": {"model_args": {"pretrained_model_name_or_path": "org/tiny-llama"}},
              "trainer": {"handler": handler, "args": {"seed": seed, "learning_rate": 1e-5}}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"task_name={name}"]))
    if summary is not None:
        (run / "evals").mkdir()
        (run / "evals" / "TOFU_SUMMARY.json").write_text(json.dumps(summary))
    for step, values in (checkpoints or {}).items():
        (run / f"checkpoint-{step}" / "evals").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "evals" / "TOFU_SUMMARY.json").write_text(json.dumps(values))
    return run


@pytest.fixture()
def ou_runs(tmp_path):
    root = tmp_path / "saves" / "unlearn"
    rng = np.random.default_rng(2)
    for handler in ("NPO", "GradDiff"):
        for seed in range(6):
            utility = 0.6 + rng.normal(0, 0.01)
            for mask in ("oracle", "random"):
                summary = {"forget_quality": float(rng.uniform(0.01, 0.5)),
                           "model_utility": utility + rng.normal(0, 0.001),
                           "extraction_strength": 0.1, "privleak": -3.0, "note": "text"}
                write_ou_run(root, f"tofu_{handler}_mask_{mask}_seed{seed}", handler, seed,
                             summary, {5: summary, 10: summary})
    return root


def test_import_open_unlearning_then_analyze_and_audit(tmp_path, ou_runs):
    csv = tmp_path / "runs.csv"
    assert main(["import", "open-unlearning", str(ou_runs), "--out", str(csv),
                 "--condition-from", "mask_(?P<condition>[a-z]+)"]) == 0
    table = pd.read_csv(csv)
    assert len(table) == 24 and set(table["condition"]) == {"oracle", "random"}
    assert {"model", "forget_split", "trainer", "seed", "model_utility", "forget_quality",
            "log_forget_quality", "checkpoint_trajectory"} <= set(table.columns)
    assert "note" not in table and (table["status"] == "done").all()
    assert table["log_forget_quality"].to_numpy() == pytest.approx(
        np.log(table["forget_quality"].to_numpy()))
    assert [p["step"] for p in json.loads(table["checkpoint_trajectory"][0])] == [5, 10]
    blocks = "model,forget_split,trainer,seed"
    assert main(["analyze", str(csv), "--block", blocks, "--condition", "condition",
                 "--metric", "model_utility", "--out", str(tmp_path / "analysis")]) == 0
    folder = tmp_path / "imported"
    assert main(["import", "open-unlearning", str(ou_runs), "--out", str(folder),
                 "--condition-from", "regex:mask_([a-z]+)"]) == 0
    assert main(["analyze", str(folder), "--out", str(tmp_path / "analysis2")]) == 0
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump({"claims": [{
        "id": "npo-utility", "source": {"paper": "p", "table": "t"},
        "claim": "oracle keeps utility as well as random", "kind": "equivalence",
        "contrast": {"a": "oracle", "b": "random"},
        "metric": {"name": "model_utility", "direction": "higher"}, "evidence": "qualitative",
        "sesoi": {"value": 0.02, "justification": "two points of utility"},
        "runs": {"match": {"trainer": "npo"}}}]}))
    out = tmp_path / "audit"
    assert main(["audit", str(claims), "--runs", str(csv), "--block", blocks,
                 "--condition", "condition", "--out", str(out)]) == 0
    (entry,) = json.loads((out / "audit.json").read_text())["claims"]
    assert entry["verdict_runs"] == "supported" and entry["verdict"] == "consistent"
    assert entry["runs_comparisons"][0]["cell"]["trainer"] == "NPO"


def test_import_errors_and_failed_runs(tmp_path, ou_runs):
    write_ou_run(ou_runs, "tofu_NPO_mask_oracle_seed9", "NPO", 9, None)
    table = import_runs([ou_runs], "mask_([a-z]+)")
    failed = table[table["status"] == "failed"]
    assert len(failed) == 1 and "TOFU_SUMMARY" in failed["error"].iloc[0]
    with pytest.raises(DataError, match="does not match --condition-from"):
        import_runs([ou_runs], "regex:arm_([a-z]+)")
    assert set(import_runs([ou_runs], "trainer.handler")["condition"]) == {"NPO", "GradDiff"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no open-unlearning run folder"):
        import_runs([tmp_path / "empty"], "mask_([a-z]+)")
    csv = tmp_path / "runs.csv"
    csv.write_text("keep me\n")
    assert main(["import", "open-unlearning", str(ou_runs), "--out", str(csv),
                 "--condition-from", "mask_([a-z]+)"]) == 2
    assert csv.read_text() == "keep me\n"
    with pytest.raises(SpecError, match="--condition-from"):
        import_runs([ou_runs], "regex:mask_([a-z+")


def test_import_csv_with_map(tmp_path):
    source = tmp_path / "theirs.csv"
    pd.DataFrame({"Seed": [0, 0, 1, 1], "Mask": ["oracle", "random"] * 2,
                  "AUES": [0.5, 0.49, 0.52, 0.5]}).to_csv(source, index=False)
    out = tmp_path / "runs.csv"
    assert main(["import", "csv", str(source), "--map", "seed=Seed,condition=Mask",
                 "--map", "aues=AUES", "--out", str(out)]) == 0
    assert list(pd.read_csv(out).columns) == ["seed", "condition", "aues"]
    assert main(["import", "csv", str(source), "--map", "seed=Nope", "--out",
                 str(tmp_path / "b.csv")]) == 2


def test_audit_runs_with_too_few_blocks_says_why(tmp_path):
    runs = synthetic_run_folder(tmp_path / "runs")
    table = pd.read_csv(runs / "runs.csv")
    table[table["seed"] == 0].to_csv(runs / "runs.csv", index=False)
    out = tmp_path / "audit"
    assert main(["audit", str(LEE), "--runs", str(runs), "--out", str(out)]) == 0
    entries = {e["id"]: e for e in json.loads((out / "audit.json").read_text())["claims"]}
    wga = entries["lee2025-t2-llama-wga-aues"]
    assert wga["verdict_runs"] is None and "2 or more matched blocks" in wga["reason_runs"]
