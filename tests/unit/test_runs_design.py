"""Design expansion: matched blocks, K draws, deterministic ids and seeds, design.json."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json

from causalloc.runs.design import CONDITION_KEYS, derive_seed, expand, manifest, run_id
from tests.runs_helpers import BASE, parse

DESIGN = {
    **copy.deepcopy(BASE),
    "seeds": [0, 1, 2],
    "k_random": 3,
    "conditions": [{"strategy": "oracle"}, {"strategy": "random"}, {"strategy": "disjoint:oracle"},
                   {"strategy": "disjoint:random"}, {"strategy": "attributed:activations"},
                   {"strategy": "overlap:0.25"}],
    "algorithms": [{"name": "npo", "steps": 10}, {"name": "ga", "steps": 10, "lr": 1e-2}],
    "localization": {"activations": {"per_layer": True}},
}


def test_counts_and_order():
    runs = expand(parse(DESIGN))
    per_block = 1 + 3 + 3 + 3 + 1 + 3  # deterministic conditions once, random-type ones K times
    assert len(runs) == 3 * 2 * 1 * per_block
    blocks = [run["block_id"] for run in runs]
    segments = [key for key, _ in itertools.groupby(blocks)]
    assert len(segments) == len(set(blocks)) == 6  # each block's runs are contiguous
    assert [run["seed"] for run in runs] == sorted(run["seed"] for run in runs)  # seed-major
    draws = [(r["condition"], r["mask_draw"]) for r in runs[:per_block]]
    assert draws[:4] == [("oracle", 0), ("random", 0), ("random", 1), ("random", 2)]


def test_run_ids_are_sha256_of_canonical_json_and_deterministic():
    runs = expand(parse(DESIGN))
    again = expand(parse(copy.deepcopy(DESIGN)))
    assert runs == again
    assert len({r["run_id"] for r in runs}) == len(runs)
    for run in runs[:5]:
        body = {k: v for k, v in run.items() if k != "run_id"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert run["run_id"] == hashlib.sha256(text.encode()).hexdigest() == run_id(run)
        assert json.loads(json.dumps(run)) == run  # plain JSON data


def test_conditions_of_a_block_differ_only_in_the_mask():
    runs = expand(parse(DESIGN))
    for _, group in itertools.groupby(runs, key=lambda r: r["block_id"]):
        shared = [{k: v for k, v in r.items() if k not in CONDITION_KEYS + ("run_id",)}
                  for r in group]
        assert all(s == shared[0] for s in shared)
    by_seed = {}
    for run in runs:  # the training seed depends on the replicate only (not the algorithm)
        by_seed.setdefault(run["seed"], set()).add(run["train"]["seed"])
    assert all(len(s) == 1 for s in by_seed.values())
    assert len({next(iter(s)) for s in by_seed.values()}) == 3


def test_mask_seeds_depend_on_seed_condition_and_draw_only():
    runs = expand(parse(DESIGN))
    seeds = {}
    for run in runs:
        key = (run["seed"], run["condition"], run["mask_draw"])
        seeds.setdefault(key, set()).add(run["mask"]["seed"])
    assert all(len(s) == 1 for s in seeds.values())  # same across algorithms
    assert len({next(iter(s)) for s in seeds.values()}) == len(seeds)  # distinct otherwise
    assert all(0 <= next(iter(s)) < 2**63 for s in seeds.values())
    assert derive_seed("mask", 0, "random", 1) == derive_seed("mask", 0, "random", 1)


def test_references_are_resolved_and_paired_by_draw():
    runs = expand(parse(DESIGN))
    block = [r for r in runs if r["block_id"] == runs[0]["block_id"]]
    masks = {(r["condition"], r["mask_draw"]): r["mask"] for r in block}
    for draw in range(3):
        assert masks[("disjoint:random", draw)]["reference"] == masks[("random", draw)]
        assert masks[("disjoint:oracle", draw)]["reference"] == masks[("oracle", 0)]
        overlap = masks[("overlap:0.25", draw)]
        assert overlap["fraction"] == 0.25 and overlap["reference"] == masks[("oracle", 0)]
    attributed = masks[("attributed:activations", 0)]
    assert attributed["method"] == "activations" and attributed["hyper"] == {"per_layer": True}


def test_changed_settings_change_ids_and_added_seeds_keep_them():
    ids = {r["run_id"] for r in expand(parse(DESIGN))}
    changed = copy.deepcopy(DESIGN)
    changed["algorithms"][0]["lr"] = 5e-4
    changed_ids = {r["run_id"] for r in expand(parse(changed)) if r["algorithm"] == "npo"}
    assert not changed_ids & ids
    more = {**copy.deepcopy(DESIGN), "seeds": [0, 1, 2, 3]}
    assert ids < {r["run_id"] for r in expand(parse(more))}


def test_manifest_follows_the_schema():
    spec = parse(DESIGN)
    data = manifest(spec, "causalloc run x.toml --out d", {"numpy": "2"})
    assert set(data) == {"block_columns", "condition_column", "replicate", "draw_column",
                         "metrics", "conditions", "spec_hash", "command", "setup"}
    assert data["block_columns"] == ["model", "data", "algorithm", "budget", "seed"]
    assert data["conditions"]["disjoint:random"] == {"kind": "disjoint", "reference": "random"}
    assert data["conditions"]["overlap:0.25"] == {"kind": "overlap", "reference": "oracle"}
    assert data["setup"] == {"model": "tiny", "data": "generated", "budgets": [0.1],
                             "seeds": [0, 1, 2], "k_random": 3, "algorithms": ["npo", "ga"],
                             "package_versions": {"numpy": "2"}}
    runs = expand(spec)
    assert set(data["conditions"]) == {r["condition"] for r in runs}
