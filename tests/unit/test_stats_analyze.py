"""End to end: run tables -> analysis.json / comparisons.csv, errors, CLI, no torch."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from causalloc.cli import main
from causalloc.errors import SpecError, TableError
from causalloc.stats import COMPARISON_COLUMNS, analyze, load_runs, parse_spec, write_analysis

SCHEMA_KEYS = {
    "id", "family", "a", "b", "metric", "cell", "n_blocks", "diffs", "replicates", "mean_a",
    "mean_b", "mean_diff", "ci95", "ci95_method", "n_boot", "t_ci95", "d_z", "g_av",
    "prob_improvement", "prob_improvement_ci95", "p_perm", "p_perm_exact", "n_resamples",
    "p_rand", "k_random", "p_t", "p_wilcoxon", "p_adj", "adj_method", "sesoi", "tost_p",
    "tost_ci90", "bf10", "verdict", "blocks_needed", "blocks_needed_detect",
    "blocks_needed_equivalence", "higher_is_better", "p_perm_mc_se", "p_rand_exact",
    "n_resamples_rand", "p_rand_mc_se", "verdict_test", "tost_p_adj", "diffs_constant",
}


def _write_output_folder(folder, seeds=8, k=3, fail=None, nan_at=None):
    """A causalloc output folder: 2 algorithms x 8 seeds, oracle (+0.05), attributed, random x K."""
    rng = np.random.default_rng(0)
    rows = []
    for algorithm in ("ga", "npo"):
        for seed in range(seeds):
            shift = rng.normal(0, 0.05)
            for condition, effect, draws in (("oracle", 0.05, 1),
                                             ("attributed:activations", 0.0, 1),
                                             ("disjoint:attributed:activations", 0.0, k),
                                             ("random", 0.0, k)):
                for draw in range(draws):
                    run_id = f"{algorithm}-{seed}-{condition}-{draw}"
                    rows.append({
                        "run_id": run_id, "status": "failed" if run_id == fail else "done",
                        "model": "tiny", "data": "forget01", "algorithm": algorithm,
                        "budget": 0.1, "seed": seed, "block_id": f"{algorithm}-{seed}",
                        "condition": condition, "mask_draw": draw,
                        "overlap_with_oracle": 1.0 if condition == "oracle"
                        else rng.uniform(0, 0.3),
                        "aues": 0.5 + shift + effect + rng.normal(0, 0.01),
                        "relearn_es": 0.3 + rng.normal(0, 0.01),
                        "error": "CUDA exploded" if run_id == fail else "",
                    })
    frame = pd.DataFrame(rows)
    if nan_at is not None:
        frame.loc[nan_at, "aues"] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "runs.csv", index=False)
    design = {"block_columns": ["model", "data", "algorithm", "budget", "seed"],
              "condition_column": "condition", "replicate": "seed", "draw_column": "mask_draw",
              "metrics": ["aues", "relearn_es"], "conditions": {}, "spec_hash": "abc",
              "command": "causalloc run x.toml", "setup": {"k_random": k, "seeds": list(range(seeds))}}
    (folder / "design.json").write_text(json.dumps(design))
    return frame


def test_analysis_json_follows_the_schema_and_finds_the_planted_effect(tmp_path):
    _write_output_folder(tmp_path / "runs")
    result = analyze(load_runs(tmp_path / "runs"))
    paths = write_analysis(result, tmp_path / "out")
    doc = json.loads(paths["analysis"].read_text())
    assert doc["schema_version"] == 1 and doc["setup"]["k_random"] == 3
    assert doc["input"]["kind"] == "causalloc" and doc["input"]["n_rows"] == 2 * 8 * 8
    assert doc["reproducibility"]["seeds"] == list(range(8))
    assert doc["policy"]["sesoi"] == {"aues": 0.02, "relearn_es": 0.02}
    pairs = {(c["a"], c["b"]) for c in doc["comparisons"]}
    assert pairs == {("oracle", "random"), ("attributed:activations", "random"),
                     ("disjoint:attributed:activations", "random"),
                     ("attributed:activations", "disjoint:attributed:activations")}
    assert len(doc["comparisons"]) == 4 * 2 * 2  # pairs x metrics x algorithm cells
    for entry in doc["comparisons"]:
        assert SCHEMA_KEYS <= set(entry)
        assert entry["n_blocks"] == 8 and len(entry["diffs"]) == 8 and entry["p_perm_exact"]
        assert entry["cell"] == {"model": "tiny", "data": "forget01",
                                 "algorithm": entry["cell"]["algorithm"], "budget": 0.1}
        primary = (entry["a"], entry["b"], entry["metric"]) == (
            "attributed:activations", "random", "aues")
        assert entry["family"] == ("primary" if primary else "controls | aues"
                                   if entry["metric"] == "aues" else "secondary | relearn_es")
        assert entry["k_random"] == 3 and entry["p_rand"] is not None  # b has K = 3 draws
        assert entry["verdict_test"] == "randomization" and entry["p_rand_exact"]
        if entry["verdict"] == "inconclusive":
            assert entry["blocks_needed"] >= 6
        else:
            assert entry["blocks_needed"] is None
    oracle = [c for c in doc["comparisons"] if c["a"] == "oracle" and c["metric"] == "aues"]
    assert all(c["verdict"] == "a_better" and c["p_perm"] == pytest.approx(2 / 256)
               for c in oracle)
    attributed = [c for c in doc["comparisons"]
                  if c["a"] == "attributed:activations" and c["metric"] == "aues"]
    assert all(c["verdict"] == "equivalent" for c in attributed)
    # relearn_es: lower is better, and the direction is recorded
    assert all(not c["higher_is_better"] for c in doc["comparisons"] if c["metric"] == "relearn_es")
    mixed = {m["contrast"]: m for m in doc["mixed_models"] if m["metric"] == "aues"}
    assert mixed["oracle - random"]["estimate"] == pytest.approx(0.05, abs=0.01)
    assert {d["predictor"] for d in doc["dose_response"]} == {"overlap"}
    csv = pd.read_csv(paths["comparisons"])
    assert list(csv.columns) == COMPARISON_COLUMNS and len(csv) == len(doc["comparisons"])
    np.testing.assert_allclose(csv["p_perm"], [c["p_perm"] for c in doc["comparisons"]])
    # the whole analysis is reproducible from the stats seed
    again = analyze(load_runs(tmp_path / "runs"))
    np.testing.assert_array_equal(again.comparisons["ci95_lo"], result.comparisons["ci95_lo"])


def test_unmatched_blocks_are_an_error_or_dropped_and_listed(tmp_path):
    _write_output_folder(tmp_path / "runs", fail="ga-3-oracle-0")
    with pytest.raises(TableError, match=r"1 unmatched block.*'seed': 3.*oracle.*--drop-unmatched"):
        analyze(load_runs(tmp_path / "runs"))
    table = load_runs(tmp_path / "runs")
    result = analyze(table, parse_spec({"drop_unmatched": True}))
    meta = result.to_dict()
    assert meta["failed_runs"] == [{"run_id": "ga-3-oracle-0", "condition": "oracle",
                                    "error": "CUDA exploded"}]
    dropped = meta["dropped_blocks"]
    assert len(dropped) == 1 and dropped[0]["block"] == {"seed": 3}
    assert dropped[0]["missing"] == ["oracle"] and "failed" in dropped[0]["reason"]
    ga = result.comparisons[result.comparisons["cell"].map(lambda c: c["algorithm"]) == "ga"]
    assert (ga["n_blocks"] == 7).all()
    assert all(3 not in reps for reps in ga["replicates"])


def test_a_block_whose_runs_used_different_theta_o_weights_is_refused(tmp_path):
    frame = _write_output_folder(tmp_path / "runs")
    frame["theta_o_fingerprint"] = "a" * 64
    frame.to_csv(tmp_path / "runs" / "runs.csv", index=False)
    assert len(analyze(load_runs(tmp_path / "runs")).comparisons)  # one theta_o: fine
    frame.loc[(frame["algorithm"] == "npo") & (frame["seed"] == 5) & (frame["condition"] == "random")
              & (frame["mask_draw"] == 1), "theta_o_fingerprint"] = "b" * 64
    frame.to_csv(tmp_path / "runs" / "runs.csv", index=False)
    with pytest.raises(TableError, match=r"1 block\(s\) whose runs started from different theta_o "
                       r".*'algorithm': 'npo'.*'seed': 5.*\['a{64}', 'b{64}'\]"):
        analyze(load_runs(tmp_path / "runs"))
    assert main(["analyze", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2


def test_nonfinite_values_need_an_explicit_policy(tmp_path):
    frame = _write_output_folder(tmp_path / "runs", nan_at=0)
    with pytest.raises(TableError, match="non-finite.*row 0.*--nonfinite drop"):
        analyze(load_runs(tmp_path / "runs"))
    result = analyze(load_runs(tmp_path / "runs"), parse_spec({"nonfinite": "drop"}))
    doc = result.to_dict()
    assert doc["excluded_runs"][0]["run_id"] == frame.loc[0, "run_id"]
    assert doc["excluded_runs"][0]["metric"] == "aues"
    affected = result.comparisons[(result.comparisons["a"] == "oracle")
                                  & (result.comparisons["metric"] == "aues")]
    assert sorted(affected["n_blocks"]) == [7, 8]
    unaffected = result.comparisons[result.comparisons["metric"] == "relearn_es"]
    assert (unaffected["n_blocks"] == 8).all()


def test_csv_input_with_column_mapping_spec_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    rows = [{"method": m, "cfg": c, "rep": r, "score": rng.normal() + (m == "new") * 2,
             "label": "x"}
            for c in ("c1", "c2") for r in range(6) for m in ("new", "base")]
    pd.DataFrame(rows).to_csv(tmp_path / "other.csv", index=False)
    path = tmp_path / "other.csv"
    kwargs = {"block": "cfg,rep", "condition": "method", "replicate": "rep"}
    with pytest.raises(SpecError, match="no SESOI for metric.*score"):
        analyze(load_runs(path, metric="score", **kwargs))
    spec = parse_spec({"sesoi": {"score": 0.5}, "higher_is_better": {"score": True},
                       "comparisons": [{"a": "new", "b": "base", "family": "main"}],
                       "adjust": "fdr_bh"})
    result = analyze(load_runs(path, metric="score", **kwargs), spec)
    assert set(result.comparisons["family"]) == {"main"}
    assert (result.comparisons["adj_method"] == "fdr_bh").all()
    assert (result.comparisons["verdict"] == "a_better").all()
    # no seed:condition variance in this table: the mixed model's boundary fit is stated
    assert result.meta["warnings"] == [
        "mixed model for score: converged=True; boundary (singular) fit: group variance "
        + "estimated as 0"]
    with pytest.raises(TableError, match=r"missing column\(s\) \['nope'\]"):
        load_runs(path, metric="nope", **kwargs)
    with pytest.raises(TableError, match="metric column 'label' is not numeric.*'x'"):
        load_runs(path, metric="label", **kwargs)
    with pytest.raises(TableError, match="share block, condition.*block column missing"):
        load_runs(path, metric="score", block="rep", condition="method", replicate="rep")
    with pytest.raises(TableError, match="replicate column 'seed' is not among"):
        load_runs(path, metric="score", block="cfg,rep", condition="method")
    with pytest.raises(SpecError, match=r"comparisons\[0\]\.b: condition 'ghost'"):
        analyze(load_runs(path, metric="score", **kwargs),
                parse_spec({"sesoi": {"score": 0.5},
                            "comparisons": [{"a": "new", "b": "ghost"}]}))
    pd.DataFrame(rows[:2]).to_csv(tmp_path / "tiny.csv", index=False)  # one block only
    with pytest.raises(TableError, match="1 matched block"):
        analyze(load_runs(tmp_path / "tiny.csv", metric="score", **kwargs),
                parse_spec({"sesoi": {"score": 0.5}}))
    (tmp_path / "empty.csv").write_text("method,cfg,rep,score\n")
    with pytest.raises(TableError, match="no rows"):
        load_runs(tmp_path / "empty.csv", metric="score", **kwargs)


def test_spec_errors_name_the_key_path():
    with pytest.raises(SpecError, match=r"^comparisons\[1\]\.famly: unknown key"):
        parse_spec({"comparisons": [{"a": "x", "b": "y"}, {"a": "x", "b": "z", "famly": "f"}]})
    with pytest.raises(SpecError, match=r"^alpah: unknown key"):
        parse_spec({"alpah": 0.05})
    with pytest.raises(SpecError, match=r"^sesoi\.aues: must be > 0"):
        parse_spec({"sesoi": {"aues": 0}})
    with pytest.raises(SpecError, match=r"^adjust: unknown method 'hs'"):
        parse_spec({"adjust": "hs"})
    with pytest.raises(SpecError, match=r"^n_boot: expected int, got str"):
        parse_spec({"n_boot": "many"})


def test_cli_writes_outputs_and_prints_verdicts(tmp_path, capsys):
    _write_output_folder(tmp_path / "runs")
    spec = tmp_path / "spec.toml"
    spec.write_text('metrics = ["aues"]\nseed = 3\n[[comparisons]]\na = "oracle"\nb = "random"\n')
    code = main(["analyze", str(tmp_path / "runs"), "--spec", str(spec), "--sesoi", "aues=0.03",
                 "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"]["sesoi"] == {"aues": 0.03} and doc["reproducibility"]["stats_seed"] == 3
    assert len(doc["comparisons"]) == 2 and doc["reproducibility"]["analysis_spec_hash"]
    assert main(["analyze", str(tmp_path / "runs"), "--out", str(tmp_path / "o2")]) == 0
    text = capsys.readouterr().out
    assert "a_better" in text and "oracle vs random" in text
    assert main(["analyze", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "runs"), "--sesoi", "aues", "--out", "x"]) == 2


def test_importing_causalloc_stats_does_not_load_torch():
    code = ("import sys, causalloc.stats, causalloc.cli.analyze; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
