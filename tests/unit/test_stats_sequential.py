"""Group-sequential permutation tests, causalloc plan and run --until-conclusive (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from causalloc.cli import main
from causalloc.stats.sequential import boundaries, look_sizes, obf_spending, sequential_test
from tests.runs_helpers import write_spec

REFERENCE = Path(__file__).parents[1] / "reference" / "rpact_obf_boundaries.csv"


def _rpact() -> pd.DataFrame:
    return pd.read_csv(REFERENCE, comment="#")


def test_spending_function_equals_rpact_alpha_spent():
    for (alpha, k_max), rows in _rpact().groupby(["alpha", "k_max"]):
        ours = obf_spending(rows["information_rate"].to_numpy(), alpha)
        np.testing.assert_allclose(ours, rows["alpha_spent"], rtol=1e-5)


def test_boundaries_from_a_joint_null_sample_reproduce_rpact_critical_values():
    """Brownian-motion z statistics at 6 equally spaced looks: the boundary on p that
    :func:`boundaries` sets from the joint sample is rpact's critical z (one-sided)."""
    rng = np.random.default_rng(7)
    for (alpha, k_max), rows in _rpact().groupby(["alpha", "k_max"]):
        z = np.cumsum(rng.standard_normal((400_000, k_max)), axis=1) / np.sqrt(np.arange(1, k_max + 1))
        null_p = special.ndtr(-z)
        bound = boundaries(null_p, obf_spending(rows["information_rate"].to_numpy(), alpha))
        critical = -special.ndtri(bound)
        # looks whose spending leaves >= 500 resamples: Monte Carlo se of z <= 0.015
        usable = rows["alpha_spent"].to_numpy() * 400_000 >= 500
        assert usable.sum() >= k_max // 2
        np.testing.assert_allclose(critical[usable], rows["critical_z"].to_numpy()[usable],
                                   atol=0.05)


def test_look_sizes():
    assert look_sizes(24, 4, 24) == [4, 8, 12, 16, 20, 24]
    assert look_sizes(10, 4, 10) == [4, 8, 10]
    assert look_sizes(9, 4, 24) == [4, 8]


def _options(**kw):
    return {"sesoi": 0.5, "higher_is_better": True, "look_every": 4, "max_blocks": 24,
            "alpha": 0.05, "family_size": 1, "rng": np.random.default_rng(0),
            "n_resamples": 1999, **kw}


def test_sequential_stops_early_for_a_large_effect_and_for_equivalence():
    rng = np.random.default_rng(1)
    b = rng.lognormal(size=24)
    a = b + 1.5 + rng.normal(0, 0.2, size=24)  # 3 x SESOI
    big = sequential_test(a, b, None, **_options())
    assert big["decision"] == "a_better" and big["blocks_used"] < 24
    same = sequential_test(b + rng.normal(0, 0.2, size=24), b, None, **_options())
    assert same["decision"] == "equivalent" and same["blocks_used"] < 24
    looks = same["looks"]
    assert [k["blocks"] for k in looks] == list(range(4, same["blocks_used"] + 1, 4))
    assert all(set(k) >= {"blocks", "p", "boundary", "decision"} for k in looks)
    # K = 2 random draws per block: the randomization version decides as well
    draws = np.stack([b, b + rng.normal(0, 0.2, size=24)], axis=1)
    rand = sequential_test(draws.mean(axis=1) + 1.5, draws.mean(axis=1), draws, **_options())
    assert rand["decision"] == "a_better"
    # fewer blocks than planned and nothing decided: continue, not inconclusive
    noisy = rng.normal(0, 3, size=8)
    assert sequential_test(noisy, np.zeros(8), None, **_options())["decision"] == "continue"


def test_sequential_type_one_error_is_held_over_the_looks():
    """200 null data sets of 24 blocks with K = 2 lognormal random draws (skewed), 6 looks:
    directional rejections stay near alpha (not 6 looks' worth), and with a true shift of
    +SESOI equivalence is (almost) never declared."""
    rng = np.random.default_rng(2)
    rejected = false_equivalence = 0
    for i in range(200):
        values = rng.lognormal(size=(24, 3))
        draws = values[:, 1:]
        options = _options(rng=np.random.default_rng(i), n_resamples=999)
        rejected += sequential_test(values[:, 0], draws.mean(axis=1), draws, **options)[
            "decision"] in ("a_better", "b_better")
        shifted = values[:, 0] + 0.5
        false_equivalence += sequential_test(shifted, draws.mean(axis=1), draws,
                                             **options)["decision"] == "equivalent"
    assert rejected <= 22  # alpha = 0.05: 10 expected, P(> 22) < 0.001
    assert false_equivalence <= 22


SEQ_SPEC = """
name = "seq_test"
budgets = [0.1]
seeds = [0, 1]
k_random = 2

[testbed]
kind = "tiny"

[[conditions]]
strategy = "oracle"

[[conditions]]
strategy = "random"

[[algorithms]]
name = "ga"
steps = 5

[eval]
every = 1
metrics = ["aues"]
"""


def test_plan_says_a_family_cannot_reject_and_run_warns(tmp_path, capsys):
    spec = write_spec(tmp_path, SEQ_SPEC)
    assert main(["plan", str(spec), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    family = doc["families"][0]
    assert family["name"] == "primary" and family["n_comparisons"] == 1
    assert family["min_p_adj"] == pytest.approx(2 / 9) and family["can_reject"] is False
    assert family["min_blocks_to_reject"] == 4 and doc["n_runs"] == 2 * 3
    bigger = write_spec(tmp_path, SEQ_SPEC.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]"),
                        name="big.toml")
    assert main(["plan", str(bigger), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["families"][0]["can_reject"] is True


def test_run_until_conclusive_adds_waves_of_seeds_then_stops(tmp_path, capsys):
    spec = write_spec(tmp_path, SEQ_SPEC)
    out = tmp_path / "out"
    code = main(["run", str(spec), "--out", str(out), "--workers", "0", "--no-progress",
                 "--run-fn", "tests.runs_helpers:toy_run", "--until-conclusive",
                 "--look-every", "4", "--max-blocks", "12"])
    err = capsys.readouterr().err
    assert code == 0 and "cannot reject at this size" in err
    assert "4 seeds" in err and "8 seeds: " in err and "a_better" in err and "12 seeds" not in err
    seeds = pd.read_csv(out / "runs.csv")["seed"]
    assert sorted(seeds.unique()) == list(range(8))
    # the analysis of the same store with --sequential records the looks
    assert main(["analyze", str(out), "--out", str(tmp_path / "a"), "--metric", "aues",
                 "--sequential", "--look-every", "4", "--max-blocks", "12"]) == 0
    doc = json.loads((tmp_path / "a" / "analysis.json").read_text())
    sequential = doc["comparisons"][0]["sequential"]
    assert sequential["decision"] == "a_better" and sequential["blocks_used"] == 8
    assert [look["blocks"] for look in sequential["looks"]] == [4, 8]
    assert doc["policy"]["sequential"]["look_every"] == 4
    assert doc["comparisons"][0]["verdict"] == "a_better"


def test_until_conclusive_takes_a_loaded_spec_as_well_as_a_path(tmp_path):
    """benchmarks/gpu.py hands it a spec changed in memory (run_dtype): the same waves."""
    import dataclasses

    from causalloc.cli.run import until_conclusive
    from causalloc.runs import load_spec

    path = write_spec(tmp_path, SEQ_SPEC)
    options = {"look_every": 4, "max_blocks": 12, "workers": 0, "progress": False,
               "run_fn": "tests.runs_helpers:toy_run"}
    by_path = until_conclusive(str(path), tmp_path / "path", **options)
    spec = load_spec(path)
    bf16 = dataclasses.replace(spec, testbed=dataclasses.replace(spec.testbed, run_dtype="bfloat16"))
    by_spec = until_conclusive(bf16, tmp_path / "spec", **options)
    assert by_spec["sequential"] == by_path["sequential"]
    assert by_path["sequential"]["seeds"] == list(range(8))
    table = pd.read_csv(tmp_path / "spec" / "runs.csv")
    assert sorted(table["seed"].unique()) == list(range(8))
    assert not set(table["run_id"]) & set(pd.read_csv(tmp_path / "path" / "runs.csv")["run_id"])


SEQ_ANALYSIS = """
metrics = ["aues"]

[sequential]
look_every = 4
max_blocks = 12

[[comparisons]]
a = "oracle"
b = "random"
family = "primary"
"""


def test_until_conclusive_reads_its_looks_and_family_from_an_analysis_spec(tmp_path, capsys):
    """--analysis: the looks come from its [sequential] table, and `analyze --spec` with the
    same file (no flags) repeats the sequential analysis the run stopped on."""
    spec = write_spec(tmp_path, SEQ_SPEC)
    analysis = write_spec(tmp_path, SEQ_ANALYSIS, name="seq.analysis.toml")
    out = tmp_path / "out"
    code = main(["run", str(spec), "--out", str(out), "--workers", "0", "--no-progress",
                 "--run-fn", "tests.runs_helpers:toy_run", "--until-conclusive",
                 "--analysis", str(analysis)])
    err = capsys.readouterr().err
    assert code == 0 and "4 seeds" in err and "8 seeds: " in err and "12 seeds" not in err
    assert sorted(pd.read_csv(out / "runs.csv")["seed"].unique()) == list(range(8))
    assert main(["analyze", str(out), "--out", str(out), "--spec", str(analysis)]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["policy"]["sequential"]["look_every"] == 4
    assert doc["policy"]["sequential"]["max_blocks"] == 12
    sequential = doc["comparisons"][0]["sequential"]
    assert sequential["decision"] == "a_better" and sequential["blocks_used"] == 8
    # the report lists the looks of each primary comparison
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Sequential looks" in report and "a look every 4 blocks, at most 12 blocks" in report
    row = next(line for line in report.splitlines()
               if line.startswith("| oracle vs random |") and "/ 12 |" in line)
    assert "4: p = " in row and "; 8: p " in row and "| a_better | 8 / 12 |" in row
    # a flag overrides the table: a look every 2 blocks is another plan
    assert main(["analyze", str(out), "--out", str(tmp_path / "b"), "--spec", str(analysis),
                 "--look-every", "2"]) == 0
    looks = json.loads((tmp_path / "b" / "analysis.json").read_text())["comparisons"][0]
    assert [look["blocks"] for look in looks["sequential"]["looks"]][:2] == [2, 4]


@pytest.mark.parametrize("table, message", [
    ("[sequential]\nmax_blocks = 8\n", "sequential.look_every: missing"),
    ("[sequential]\nlook_every = 0\n", "sequential.look_every: must be >= 1"),
    ("[sequential]\nlook_every = 4\nmax_blocks = 2\n", "sequential.max_blocks: must be >= look_every"),
    ("[sequential]\nlook_every = 4\nevery = 2\n", "sequential"),
])
def test_a_bad_sequential_table_names_its_key(tmp_path, table, message):
    from causalloc.errors import SpecError
    from causalloc.stats.spec import load_spec

    path = write_spec(tmp_path, table, name="bad.analysis.toml")
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_analysis_without_until_conclusive_is_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, SEQ_SPEC)
    analysis = write_spec(tmp_path, SEQ_ANALYSIS, name="seq.analysis.toml")
    code = main(["run", str(spec), "--out", str(tmp_path / "out"), "--workers", "0",
                 "--no-progress", "--analysis", str(analysis)])
    assert code != 0 and "--analysis decides --until-conclusive" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs.sqlite").exists()


def test_until_conclusive_refuses_an_analysis_without_a_primary_family(tmp_path, capsys):
    """No primary comparison: no look can decide, so it stops with an error after the first
    wave (whose runs stay in the store) instead of calling the empty family decided."""
    spec = write_spec(tmp_path, SEQ_SPEC)
    analysis = write_spec(tmp_path, SEQ_ANALYSIS.replace('family = "primary"', 'family = "main"'),
                          name="seq.analysis.toml")
    out = tmp_path / "out"
    code = main(["run", str(spec), "--out", str(out), "--workers", "0", "--no-progress",
                 "--run-fn", "tests.runs_helpers:toy_run", "--until-conclusive",
                 "--analysis", str(analysis)])
    assert code != 0 and "the analysis has no primary comparison" in capsys.readouterr().err
    assert sorted(pd.read_csv(out / "runs.csv")["seed"].unique()) == list(range(4))


def test_until_conclusive_run_again_resumes_its_waves(tmp_path, capsys):
    """The same command after a stop (budget, crash) resumes: the seeds that earlier waves
    added are part of the design, not runs of another spec."""
    spec = write_spec(tmp_path, SEQ_SPEC)
    out = tmp_path / "out"
    command = ["run", str(spec), "--out", str(out), "--workers", "0", "--no-progress",
               "--run-fn", "tests.runs_helpers:toy_run", "--until-conclusive",
               "--look-every", "2", "--max-blocks", "4"]
    assert main(command) == 0
    assert sorted(pd.read_csv(out / "runs.csv")["seed"].unique()) == [0, 1, 2, 3]
    capsys.readouterr()
    assert main(command) == 0
    assert "4 seeds" in capsys.readouterr().err
    assert len(pd.read_csv(out / "runs.csv")) == 4 * 3  # nothing run twice
