"""`causalloc import muse | lm-eval | rwku` on synthetic fixtures (tests/fixtures/importers,
written by make_fixtures.py from the frameworks' formats), the shared rules, wrong-kind
errors, and open-unlearning's Truth Ratio aggregator and commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from causalloc.cli import main
from causalloc.errors import DataError, SpecError
from causalloc.importers import common, lm_eval, muse, open_unlearning, rwku
from causalloc.stats import load_runs, load_spec
from causalloc.stats.analyze import analyze

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "importers"
MUSE_CSV = FIXTURES / "muse" / "news_results.csv"
HARNESS = FIXTURES / "lm_eval" / "harness"
OU_LMEVAL = FIXTURES / "lm_eval" / "open_unlearning"
RWKU = FIXTURES / "rwku"
RWKU_FORGET = next(RWKU.rglob("forget.json"))
SEED = ["--block", r"seed=seed(\d+)"]
MASK = ["--condition-from", "mask_([a-z]+)"]


def verdicts(folder: Path, sesoi: dict[str, float]) -> pd.DataFrame:
    """Analyse an imported folder with its sidecar spec (fewer resamples: a quick test)."""
    spec = load_spec(folder / "analysis.toml")
    spec.sesoi, spec.n_boot, spec.mixed_model, spec.dose_response = sesoi, 999, False, False
    spec.metrics = list(sesoi)
    result = analyze(load_runs(folder), spec)
    assert result.meta["policy"]["higher_is_better"] == {
        m: spec.higher_is_better[m] for m in sesoi}
    return result.comparisons.set_index("metric")


def test_muse_csv_to_run_table_and_verdicts(tmp_path):
    out = tmp_path / "muse"
    assert main(["import", "muse", str(MUSE_CSV.parent), *MASK, *SEED,
                 "--block", "algorithm=^([a-z]+)_", "--out", str(out)]) == 0
    table = pd.read_csv(out / "runs.csv")
    raw = pd.read_csv(MUSE_CSV)
    assert len(table) == 12 and sorted(table["seed"].unique()) == list(range(6))
    assert set(table["condition"]) == {"oracle", "random"} and set(table["algorithm"]) == {"npo"}
    for column in ("verbmem_f", "knowmem_f", "knowmem_r"):  # percent -> [0, 1]
        assert table[column].to_numpy() == pytest.approx(raw[column].to_numpy() / 100)
    assert table["privleak"].to_numpy() == pytest.approx(raw["privleak"].to_numpy())
    assert table["abs_privleak"].to_numpy() == pytest.approx(raw["privleak"].abs().to_numpy())
    spec = load_spec(out / "analysis.toml")
    assert spec.higher_is_better == {"verbmem_f": False, "knowmem_f": False,
                                     "knowmem_r": True, "abs_privleak": False}
    design = json.loads((out / "design.json").read_text())
    assert design["setup"]["imported_from"] == "muse"
    assert design["setup"]["metric_facts"]["privleak"]["higher_is_better"] is None
    assert "privleak" not in design["metrics"] and "knowmem_f" in design["metrics"]
    found = verdicts(out, {"knowmem_f": 0.02, "knowmem_r": 0.02})
    # the oracle forgets 0.10 more (lower knowmem_f is better) and keeps utility
    assert found.loc["knowmem_f", "verdict"] == "a_better"
    assert found.loc["knowmem_r", "verdict"] == "equivalent"


def test_lm_eval_harness_results_to_verdicts_through_the_cli(tmp_path):
    out = tmp_path / "wmdp"
    assert main(["import", "lm-eval", str(HARNESS), *MASK, *SEED, "--out", str(out)]) == 0
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 12 and (table["framework_commit"] == "0123abc").all()
    assert {"wmdp_bio_acc", "wmdp_bio_acc_stderr", "wmdp_cyber_acc", "mmlu_acc"} <= set(table)
    first = json.loads(Path(table["run_id"][0]).read_text())
    assert table["wmdp_bio_acc"][0] == first["results"]["wmdp_bio"]["acc,none"]
    assert table["run_name"][0] == first["model_name"]
    design = json.loads((out / "design.json").read_text())
    assert design["metrics"] == ["mmlu_acc", "wmdp_bio_acc", "wmdp_cyber_acc"]
    # WMDP is the knowledge to remove: lower is better, whatever lm-eval's own table says
    assert load_spec(out / "analysis.toml").higher_is_better == {
        "mmlu_acc": True, "wmdp_bio_acc": False, "wmdp_cyber_acc": False}
    analysis = tmp_path / "analysis"
    assert main(["analyze", str(out), "--spec", str(out / "analysis.toml"), "--metric",
                 "wmdp_bio_acc,mmlu_acc", "--sesoi", "wmdp_bio_acc=0.02,mmlu_acc=0.02",
                 "--out", str(analysis)]) == 0
    rows = pd.read_csv(analysis / "comparisons.csv").set_index("metric")
    assert rows.loc["wmdp_bio_acc", "verdict"] == "a_better"
    assert rows.loc["mmlu_acc", "verdict"] == "equivalent"


def test_lm_eval_open_unlearning_summary_reads_the_run_config(tmp_path):
    table = lm_eval.import_runs([OU_LMEVAL], "mask.kind",
                                common.parse_blocks(["seed=trainer.args.seed"]))
    assert len(table) == 4 and set(table["condition"]) == {"oracle", "random"}
    assert set(table["seed"]) == {0, 1}
    assert table["run_name"].str.startswith("wmdp_RMU_mask_").all()
    summary = json.loads(Path(table["run_id"][0]).read_text())
    assert table["wmdp_bio_acc"][0] == summary["wmdp_bio/acc"]
    assert table["mmlu_acc_stderr"][0] == summary["mmlu/acc_stderr"]
    assert table.attrs["facts"]["wmdp_bio_acc"].higher_is_better is False
    out = tmp_path / "ou"
    common.write_table(table, out, design=common.design_manifest(
        table, {"seed": ()}, None, facts=table.attrs["facts"]), facts=table.attrs["facts"])
    found = verdicts(out, {"wmdp_bio_acc": 0.02})
    assert found.loc["wmdp_bio_acc", "n_blocks"] == 2 and found["verdict"].notna().all()


def test_rwku_levels_aggregated_and_analysed(tmp_path):
    out = tmp_path / "rwku"
    assert main(["import", "rwku", str(RWKU), *MASK, *SEED, "--block", "target=target",
                 "--block", "method=/([a-z]+)_mask", "--out", str(out)]) == 0
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 28 and set(table["target"]) == {"Stephen King", "Confucius"}
    assert set(table["method"]) == {"ga"} and sorted(table["seed"].unique()) == list(range(7))
    row = table.iloc[0]
    forget = json.loads(Path(row["run_id"]).read_text())
    levels = [forget[f"level_{k}_rouge_l_r"] for k in (1, 2, 3)]
    counts = [sum(p["level"] == str(k) for p in forget["results"]) for k in (1, 2, 3)]
    assert [row[f"forget_l{k}_rouge_l_r"] for k in (1, 2, 3)] == levels
    assert [row[f"forget_l{k}_n"] for k in (1, 2, 3)] == counts == [2, 3, 4]
    assert row["forget_all_rouge_l_r"] == pytest.approx(np.dot(counts, levels) / sum(counts))
    assert {"neighbor_l1_rouge_l_r", "neighbor_l2_rouge_l_r", "neighbor_all_rouge_l_r"} <= set(table)
    spec = load_spec(out / "analysis.toml")
    assert spec.higher_is_better["forget_all_rouge_l_r"] is False
    assert spec.higher_is_better["neighbor_all_rouge_l_r"] is True
    assert "forget_l1_n" not in spec.higher_is_better
    found = verdicts(out, {"forget_all_rouge_l_r": 0.02, "neighbor_all_rouge_l_r": 0.02})
    assert list(found.loc["forget_all_rouge_l_r", "verdict"]) == ["a_better"] * 2  # per target
    assert found.loc["neighbor_all_rouge_l_r", "verdict"].isin(["equivalent", "inconclusive"]).all()


@pytest.mark.parametrize("importer, path, message", [
    (lm_eval, MUSE_CSV, r"news_results.csv: a CSV file, not an lm-eval results JSON"),
    (lm_eval, RWKU_FORGET, r"forget.json: not an lm-eval results JSON.*level_1_rouge_l_r"),
    (rwku, MUSE_CSV, r"news_results.csv: a CSV file, not an RWKU forget.json"),
    (rwku, next(HARNESS.rglob("*.json")), r"not an RWKU forget.json: missing \['level_1_rouge_l_r'"),
    (muse, next(HARNESS.rglob("*.json")), r"a JSON file, not a MUSE results CSV"),
])
def test_wrong_kind_of_file_is_named(importer, path, message):
    with pytest.raises(DataError, match=message):
        importer.import_runs([path], "mask_([a-z]+)", {"seed": (r"seed(\d+)",)})


def test_files_without_the_expected_keys(tmp_path):
    odd = tmp_path / "results_x.json"
    odd.write_text(json.dumps({"results": {"wmdp_bio": {"alias": "wmdp_bio"}}, "note": 1}))
    with pytest.raises(DataError, match=r"results_x.json: not an lm-eval.*\['results', 'note'\]"):
        lm_eval.import_runs([odd], "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no RWKU forget.json below"):
        rwku.import_runs([tmp_path / "empty"], "x")
    partial = tmp_path / "forget.json"
    partial.write_text(json.dumps({"level_1_rouge_l_r": 0.5, "level_2_rouge_l_r": 0.4,
                                   "level_3_rouge_l_r": 0.3,
                                   "results": [{"level": "1", "subject": "A"}]}))
    with pytest.raises(DataError, match=r"forget.json: results has no probe of level\(s\) \[2, 3\]"):
        rwku.import_runs([partial], "x")
    other = tmp_path / "other.csv"
    other.write_text("model,seed,aues\nm,0,0.5\n")
    with pytest.raises(DataError, match=r"other.csv: not a MUSE results CSV: lacks column 'name' "
                                        r"and a metric column.*columns: \['model', 'seed'"):
        muse.import_runs([other], "x")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,knowmem_f\nnpo_mask_oracle_seed0,high\n")
    with pytest.raises(DataError, match=r"bad.csv: row 2, column 'knowmem_f': not a number"):
        muse.import_runs([bad], "mask_([a-z]+)")
    assert main(["import", "lm-eval", str(MUSE_CSV), *MASK, "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_rules_find_seed_in_folder_names_and_named_groups(tmp_path):
    folder = tmp_path / "run_seed7"
    folder.mkdir()
    (folder / "muse.csv").write_text(
        "name,knowmem_f,knowmem_r,extra\nnpo_oracle,30,40,a\nnpo_random,40,40,b\nnpo_x,,,c\n")
    table = muse.import_runs([tmp_path], "(?P<condition>oracle|random|x)$",
                             common.parse_blocks([r"seed=seed(\d+)", "group=extra"]))
    assert list(table["seed"]) == [7, 7, 7]  # from the folder: the names carry no seed
    assert list(table["condition"]) == ["oracle", "random", "x"]
    assert list(table["group"]) == ["a", "b", "c"]  # a key: a column of the CSV
    assert list(table["status"]) == ["done", "done", "failed"]
    assert table["error"].iloc[2] == "no MUSE metric value"
    assert common.parse_blocks([r"seed=s(\d{1,2})", "a=x.y,b.c"]) == {
        "seed": (r"s(\d{1,2})",), "a": ("x.y",), "c": ("b.c",)}
    with pytest.raises(SpecError, match=r"--block: column name\(s\) \['knowmem_f'\] already"):
        muse.import_runs([tmp_path], "oracle|random|x", {"knowmem_f": (r"seed(\d+)",)})
    with pytest.raises(SpecError, match="--block: expected NAME=KEY_OR_REGEX"):
        common.parse_blocks(["=x"])
    with pytest.raises(DataError, match="does not match --block seed"):
        muse.import_runs([tmp_path], "oracle|random|x", {"seed": (r"trial(\d+)",)})
    with pytest.raises(SpecError, match="--block lr: key 'lr' is set in only 1 of 3 runs"):
        (folder / "muse.csv").write_text("name,knowmem_f,lr\nnpo_oracle,30,1\nnpo_random,40,\n"
                                         "npo_x,50,\n")
        muse.import_runs([tmp_path], "oracle|random|x", {"lr": ("lr",)})


def write_ou_run(root: Path, name: str, seed: int, aggregator: str | None,
                 commit: str | None = None) -> None:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"task_name": name, "forget_split": "forget10",
              "model": {"model_args": {"pretrained_model_name_or_path": "org/tiny"}},
              "trainer": {"handler": "NPO", "args": {"seed": seed}}}
    if aggregator:
        config["eval"] = {"tofu": {"metrics": {"forget_truth_ratio": {
            "handler": "truth_ratio", "aggregator": aggregator}}}}
    if commit:
        config["git_commit"] = commit
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "evals").mkdir()
    (run / "evals" / "TOFU_SUMMARY.json").write_text(json.dumps(
        {"forget_truth_ratio": 0.6 + 0.01 * seed, "model_utility": 0.5, "privleak": -12.5}))


def test_open_unlearning_records_truth_ratio_aggregator_and_commit(tmp_path):
    root = tmp_path / "same"
    for seed in range(2):
        for mask in ("oracle", "random"):
            write_ou_run(root, f"mask_{mask}_seed{seed}", seed, "prob_mean", "abc123")
    table = open_unlearning.import_runs([root], "mask_([a-z]+)")
    assert set(table["truth_ratio_aggregator"]) == {"prob_mean"}
    assert set(table["framework_commit"]) == {"abc123"}
    assert set(table["abs_privleak"]) == {12.5}
    facts = table.attrs["facts"]
    assert facts["forget_truth_ratio"].higher_is_better is False  # prob_mean: knowledge kept
    assert "prob_mean" in facts["forget_truth_ratio"].about
    csv = tmp_path / "runs.csv"
    assert main(["import", "open-unlearning", str(root), *MASK, "--out", str(csv)]) == 0
    assert load_spec(tmp_path / "runs.analysis.toml").higher_is_better["forget_truth_ratio"] is False
    mixed = tmp_path / "mixed"
    write_ou_run(mixed, "mask_oracle_seed0", 0, "prob_mean")
    write_ou_run(mixed, "mask_random_seed0", 0, "closer_to_1_better")
    with pytest.raises(DataError, match=r"different Truth Ratio aggregators \['closer_to_1_better', "
                                        r"'prob_mean'\]"):
        open_unlearning.import_runs([mixed], "mask_([a-z]+)")
    unnamed = tmp_path / "unnamed"
    write_ou_run(unnamed, "mask_oracle_seed0", 0, "closer_to_1_better")
    write_ou_run(unnamed, "mask_random_seed0", 0, None)
    table = open_unlearning.import_runs([unnamed], "mask_([a-z]+)")
    assert "1 run(s) do not name their aggregator" in table.attrs["warnings"][0]
    assert "framework_commit" not in table
