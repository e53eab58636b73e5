"""Expand an :class:`~causalloc.runs.spec.ExperimentSpec` into matched blocks x conditions.

A **block** is one (model, data, algorithm, budget, seed) cell replicate: its runs share the
testbed, the training settings and seed (data order and the objective's draws), the
hyperparameters, the evaluation schedule and the relearning attack, so they differ only in
the mask. Each random-type condition (``random``, ``disjoint``, ``layer_matched``,
``overlap``) gets ``k_random`` runs per block (``mask_draw`` 0..K-1); the others get one.

Every run is a plain JSON-serialisable dict, the whole input of the run function::

    {"format": 1, "run_id": sha256 of the canonical JSON of the rest of this dict,
     "block_id": sha256 of the block part (everything except condition, condition_kind,
                 mask_draw and mask),
     "model": "tiny", "data": "generated", "algorithm": label, "budget": 0.1, "seed": 0,
     "testbed": {kind, budget, seed, n_authors, n_forget_authors, [n_questions],
                 [tofu_path], build: {...}, [model], [dtype], [device], [run_dtype], [batch_size],
                 [grad_accum], [gradient_checkpointing], [max_length]},
     "objective": {"name": "npo", "hyper": {...}},
     "train": {steps, lr, batch_size, optimizer, ..., "seed": derived training seed},
     "eval": {"every": 10, "metrics": [...]},
     "relearn": null | {"steps", "lr", "fraction", "seed"[, "strengths", "start"]},
     "condition": "disjoint:oracle", "condition_kind": "disjoint", "mask_draw": 0,
     "mask": MASK}

    MASK = {"strategy", "kind", "draw", "seed",
            + "method", "hyper"           (attributed)
            + "fraction"                  (overlap; reference = the testbed's V_tgt)
            + "path"                      (given)
            + "reference_condition", "reference": MASK   (disjoint, layer_matched, overlap)}

A reference that is itself random-type is paired draw by draw (draw d of
``disjoint:random`` avoids draw d of ``random``). Runs are ordered seed-major and
block-contiguous, so a partial design holds complete blocks for the first seeds.
"""

from __future__ import annotations

import hashlib

import numpy as np

from causalloc.runs.spec import ConditionSpec, ExperimentSpec, sha256_json

RUN_FORMAT = 1
BLOCK_COLUMNS = ("model", "data", "algorithm", "budget", "seed")
#: the block columns of a design with replicated testbeds (``[testbed] seeds``): blocks nest in
#: testbeds, ``testbed`` = the testbed seed
REPLICATED_BLOCK_COLUMNS = ("model", "data", "testbed", "algorithm", "budget", "seed")
#: keys of a run dict that may differ between the runs of one block
CONDITION_KEYS = ("condition", "condition_kind", "mask_draw", "mask", "grid_point")


def block_columns(spec: ExperimentSpec) -> tuple[str, ...]:
    """The block columns of the spec's run table."""
    return REPLICATED_BLOCK_COLUMNS if spec.testbed.replicated else BLOCK_COLUMNS


def block_value(run: dict, column: str):
    """A run's value of a block column: ``testbed`` is the seed of its testbed."""
    return run["testbed"]["seed"] if column == "testbed" else run[column]


def train_settings(run: dict) -> dict:
    """The training settings of a run: the block's, with its grid point's values."""
    return {**run["train"], **run.get("grid_point", {})}


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from integers and strings via numpy's SeedSequence (strings enter as
    the first 8 bytes of their sha256), so that every stream is reproducible and distinct."""
    entropy = [p if isinstance(p, int) else
               int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "little") for p in parts]
    low, high = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(high) << 31) ^ int(low)


def mask_seed(seed: int, condition: str, draw: int) -> int:
    """Seed of the mask draw ``draw`` of ``condition`` in the replicate ``seed``."""
    return derive_seed("mask", seed, condition, draw)


def expand(spec: ExperimentSpec) -> list[dict]:
    """All runs of the design, each a resolved dict with ``run_id`` and ``block_id``."""
    runs = []
    for seed in spec.seeds:
        for testbed_seed, testbed in spec.testbed.replicates():
            for algorithm in spec.algorithms:
                for budget in spec.budgets:
                    block = _block(spec, algorithm, budget, seed, testbed, testbed_seed)
                    block_id = sha256_json(block)
                    for condition in spec.conditions:
                        for draw in range(condition.draws(spec.k_random)):
                            for point in algorithm.grid_points():
                                run = {**block, "block_id": block_id, "condition": condition.name,
                                       "condition_kind": condition.kind, "mask_draw": draw,
                                       "mask": _mask_spec(spec, condition, draw, seed)}
                                if point:
                                    run["grid_point"] = point
                                run["run_id"] = run_id(run)
                                runs.append(run)
    return runs


def _block(spec: ExperimentSpec, algorithm, budget: float, seed: int, testbed: dict,
           testbed_seed: int) -> dict:
    """What the runs of a block share. A tuned design adds its criterion (``tuning``) and the
    item split of its testbed (``eval.split``); without them the dict, and so every id, is
    that of a design written before tuning existed. The grid is not part of the block (each
    run carries its ``grid_point``), so widening a grid keeps the ids of the runs already made."""
    block = {
        "format": RUN_FORMAT,
        "model": spec.testbed.model_label, "data": spec.testbed.data,
        "algorithm": algorithm.label, "budget": budget, "seed": seed,
        "testbed": testbed,
        "objective": {"name": algorithm.name, "hyper": algorithm.hyper},
        "train": {**algorithm.train, "seed": derive_seed("train", seed)},
        "eval": spec.eval.for_testbed(testbed_seed),
        "relearn": None if spec.relearn is None else {
            **spec.relearn.to_dict(), "seed": derive_seed("relearn", seed)},
    }
    if spec.tuning is not None:  # the grid itself stays out: a widened grid reuses the runs made
        block["tuning"] = {"criterion": spec.tuning.criterion}
        block["eval"]["split"] = spec.tuning.split(testbed_seed)
    return block


def run_id(run: dict) -> str:
    """sha256 of the run's canonical JSON without its ``run_id`` key."""
    return sha256_json({key: value for key, value in run.items() if key != "run_id"})


def _mask_spec(spec: ExperimentSpec, condition: ConditionSpec, draw: int, seed: int) -> dict:
    mask = {"strategy": condition.strategy, "kind": condition.kind, "draw": draw,
            "seed": mask_seed(seed, condition.name, draw)}
    if condition.kind == "attributed":
        mask.update(method=condition.argument, hyper=spec.localization[condition.argument])
    elif condition.kind == "overlap":
        mask["fraction"] = condition.argument
    elif condition.kind == "given":
        mask["path"] = condition.argument
    if condition.kind == "overlap":
        mask["reference_condition"] = "oracle"
        mask["reference"] = {"strategy": "oracle", "kind": "oracle", "draw": 0,
                             "seed": mask_seed(seed, "oracle", 0)}
    elif condition.reference is not None:
        reference = spec.condition(condition.reference)
        mask["reference_condition"] = reference.name
        mask["reference"] = _mask_spec(spec, reference, draw if reference.is_random else 0, seed)
    return mask


def manifest(spec: ExperimentSpec, command: str, package_versions: dict,
             testbed: dict | None = None, environments: list[dict] | None = None) -> dict:
    """The ``design.json`` contract read by ``causalloc analyze`` (schema.md); ``testbed``
    (kind, injection, hash and diagnostics of the built testbed) goes into the setup when known,
    ``environments`` (:meth:`~causalloc.runs.store.RunStore.environments`: the source commits,
    torch builds and thread counts the done runs were made with) into ``environments``."""
    data = {
        "block_columns": list(block_columns(spec)),
        "condition_column": "condition",
        "replicate": "seed",
        "draw_column": "mask_draw",
        "metrics": list(spec.eval.metrics),
        "conditions": {c.name: {"kind": c.kind, "reference": c.reference} for c in spec.conditions},
        "spec_hash": spec.spec_hash,
        "command": command,
        "setup": {
            "model": spec.testbed.model_label,
            "data": spec.testbed.data,
            "budgets": list(spec.budgets),
            "seeds": list(spec.seeds),
            "k_random": spec.k_random,
            "algorithms": [a.label for a in spec.algorithms],
            "package_versions": package_versions,
        },
    }
    if testbed:
        data["setup"]["testbed"] = testbed
    if spec.testbed.replicated:
        data["cluster"] = "testbed"
        data["setup"]["testbed_seeds"] = list(spec.testbed.seeds)
    if spec.tuning is not None:
        data["tuning"] = {
            "criterion": spec.tuning.criterion,
            "selection_column": f"select_{spec.tuning.criterion}",
            "selection_fraction": spec.tuning.selection_fraction,
            "grid": {a.label: a.grid for a in spec.algorithms},
        }
    if environments is not None:
        data["environments"] = environments
    return data
