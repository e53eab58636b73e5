"""The real run function: one resolved run dict -> metrics, trajectory and the hard-constraint check.

Per worker process (``context.cache``) it keeps, for each testbed and run dtype
(``[testbed] run_dtype``), one loaded theta_o (frozen, shared read-only by every run and
used as the reference model of NPO / DPO / RMU), its snapshot for the constraint check
(digests; values read back from the saved theta_o, so no second copy of the model), the
fingerprint of the theta_o it loaded (checked against the testbed's record and against the
one the design's runs used, before every run), the encoded data, the evaluation batches,
theta_r's truth ratios (for forget quality), the attributed masks already computed, the
scores of theta_o (every run's step 0) and of theta_r (both as the testbed's build recorded
them where that record holds, else computed once) and the reference forwards of the current
block.
When ``mu95`` or ``model_utility`` is asked for, every checkpoint also gets its TOFU model
utility and log forget quality (trajectory keys ``mu``, ``lfq``), from which MU95 is taken.
A run then only attaches its trainable masked columns, trains and evaluates.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from causalloc.data.collate import (
    encode_items,
    encode_qa,
    eval_batches,
    length_sorted_batches,
    pad_id,
)
from causalloc.errors import ConstraintError, SpecError
from causalloc.flags import outcome_flags
from causalloc.frontier import steps_to_target
from causalloc.masks import (
    Mask,
    budget_to_count,
    disjoint_random,
    given,
    layer_matched_random,
    overlap_controlled,
    uniform_random,
)
from causalloc.metrics import (
    AnswerScorer,
    TruthRatio,
    aues,
    extraction_strength_per_item,
    forget_quality,
    fs_at_rs,
    relearning_attack,
    truth_ratio,
    truth_ratio_groups,
)
from causalloc.models.weights import weights_fingerprint
from causalloc.quantize import quantize_linear_weights_
from causalloc.runs.design import train_settings
from causalloc.runs.spec import RELEARN_STRENGTH_METRIC, relearn_metric_name
from causalloc.testbed import Testbed, build_testbed, config_for
from causalloc.unlearn import ParameterSnapshot, TrainConfig, UnlearnData, make_objective, unlearn
from causalloc.unlearn.runner import ReferenceCache
from causalloc.utility import UtilityProbe, mu95

#: the ``quant_recovery`` scheme (see causalloc.quantize): 4-bit RTN, groups of 64 input weights
QUANT_BITS, QUANT_GROUP = 4, 64
#: run["testbed"] keys that are not TestbedConfig fields (``run_dtype`` says in which dtype the
#: runs load the testbed's models, not what the testbed is)
_TESTBED_KEYS = {"kind", "budget", "seed", "build", "run_dtype"}


def testbed_config(spec: dict):
    """TestbedConfig of a run's ``testbed`` table: ``seed`` seeds data, init and V_tgt;
    ``batch_size`` is the micro-batch of both the retain fine-tuning and the injection;
    ``build`` holds builder overrides (they win over the other keys)."""
    extra = {k: v for k, v in spec.items() if k not in _TESTBED_KEYS and k != "build"}
    if "batch_size" in extra:
        extra["retain_batch"] = extra["inject_batch"] = extra.pop("batch_size")
    seed = int(spec.get("seed", 0))
    return config_for(spec.get("kind", "tiny"), **{
        "budget": spec.get("budget", 0.1), "data_seed": seed, "model_seed": seed, "target_seed": seed,
        **extra, **spec.get("build", {})})


def resolve_testbed(spec: dict, progress: bool = False) -> Testbed:
    """The testbed of a run's ``testbed`` table: the imported pinned testbed when it names one
    (``pinned``: theta_o fingerprint of a ``[testbed] file``, imported by the design stage),
    else the one its config builds (or the cached build)."""
    if spec.get("pinned"):
        from causalloc.testbed_file import pinned_testbed

        return pinned_testbed(spec["pinned"])
    return build_testbed(testbed_config(spec), progress=progress)


class TestbedState:
    """What every run on one testbed shares inside a worker process.

    ``split`` (a tuned design's ``eval.split``: ``selection_fraction`` and ``seed``) divides
    the forget and the retain items each into a selection and an evaluation part, drawn once
    per testbed: scores are then those of the evaluation items, with the selection items'
    as ``rs_sel`` / ``fs_sel``, and forget quality and MU95 use the evaluation forget items.
    ``run_dtype`` (``[testbed] run_dtype``) is the dtype theta_o and theta_r are loaded in
    (None: the testbed's own); the snapshot converts the saved theta_o to it, as loading does.
    """

    __test__ = False

    def __init__(self, testbed: Testbed, max_length: int, split: dict | None = None,
                 retain_items: dict | None = None, run_dtype: str | None = None):
        self.testbed = testbed
        self.run_dtype = run_dtype
        self.model = testbed.load_model("theta_o", dtype=run_dtype)
        self.theta_o_fingerprint = weights_fingerprint(testbed.path / "theta_o")
        check_fingerprint(self.theta_o_fingerprint, testbed.theta_o_fingerprint,
                          f"the record of the testbed at {testbed.path} (testbed.json): the cached "
                          "theta_o was modified after it was built; delete that folder to rebuild it")
        self.tokenizer = testbed.tokenizer()
        self.pad = pad_id(self.tokenizer)
        self.snapshot = ParameterSnapshot(self.model, saved=testbed.path / "theta_o")
        self.signature = testbed.v_tgt.signature
        splits = testbed.splits
        self.forget = encode_items(self.tokenizer, splits.forget, max_length)
        self.retain = encode_items(self.tokenizer, splits.retain, max_length)
        self.refusal = self._refusals(splits, max_length)
        self.scored_retain = retain_subset(len(self.retain), retain_items)
        self._score_order, self._score_batches = self._scoring_batches()
        self.parts = item_split(len(self.forget), len(self.scored_retain), split)
        self.reference_cache = ReferenceCache()
        self.masks: dict[str, Mask] = {}
        self._tr_reference = None
        self._initial_scores = None
        self.max_length = max_length
        self._utility_probe = None
        self._forget_answers = None
        self._initial_utility = None
        self._quant_theta_o = None
        self._theta_r_scores = None

    @property
    def scored_forget_items(self) -> list:
        """The forget items that forget quality is computed on (the evaluation part)."""
        forget = self.testbed.splits.forget
        return forget if self.parts is None else [forget[i] for i in self.parts["forget_eval"]]

    def _per_item(self, model) -> np.ndarray:
        """ES of every forget item, then every scored retain item, from one teacher-forced pass."""
        return extraction_strength_per_item(model, self._score_order, self._score_batches)

    def _recorded(self, which: str) -> np.ndarray | None:
        """ES of ``which`` (theta_o or theta_r) on the scored items as the testbed's build
        computed them (:meth:`~causalloc.testbed.Testbed.recorded_item_es`), when that record
        holds here: the same max_length, the dtype these runs load the models in and the
        device type of this worker; otherwise None (the scores are then computed). The build
        ran the same pass over all forget and retain items, so with every retain item scored
        the values are those this worker would compute, and with a subset equal to float
        rounding (another batch composition)."""
        record = self.testbed.recorded_item_es()
        here = {"max_length": self.max_length, "dtype": self.run_dtype or self.testbed.config.dtype,
                "device": next(self.model.parameters()).device.type}
        if record is None or any(record[key] != value for key, value in here.items()):
            return None
        values, n_forget = np.asarray(record[which], dtype=float), int(record["n_forget"])
        return np.concatenate([values[:n_forget], values[n_forget:][self.scored_retain]])

    def _summarise(self, values: np.ndarray) -> dict:
        """RS = mean ES(retain), FS = 1 - mean ES(forget): of all items, or of the evaluation
        items with the selection items' as ``rs_sel`` / ``fs_sel``."""
        n_forget = len(self.forget)
        forget, retain = values[:n_forget], values[n_forget:]
        if self.parts is None:
            return {"rs": float(np.mean(retain)), "fs": 1.0 - float(np.mean(forget))}
        parts = self.parts
        return {"rs": float(np.mean(retain[parts["retain_eval"]])),
                "fs": 1.0 - float(np.mean(forget[parts["forget_eval"]])),
                "rs_sel": float(np.mean(retain[parts["retain_sel"]])),
                "fs_sel": 1.0 - float(np.mean(forget[parts["forget_sel"]]))}

    def theta_r_scores(self) -> dict:
        """RS and FS of theta_r (the retrained model: the forget target) on the scored items,
        once per testbed: as the build recorded them (:meth:`_recorded`), else computed
        (theta_r loaded, then released)."""
        if self._theta_r_scores is None:
            values = self._recorded("theta_r")
            if values is None:
                theta_r = self.testbed.load_model("theta_r", device=next(self.model.parameters()).device,
                                                  dtype=self.run_dtype)
                values = self._per_item(theta_r)
                del theta_r
            self._theta_r_scores = self._summarise(values)
        return dict(self._theta_r_scores)

    def _refusals(self, splits, max_length):
        """Forget questions paired with refusal answers (item i gets refusal i mod R)."""
        refusals = splits.refusals or ["I don't know."]
        return [encode_qa(self.tokenizer, item.question, refusals[i % len(refusals)], max_length)
                for i, item in enumerate(splits.forget)]

    def _scoring_batches(self):
        """Forget and scored retain examples together, sorted by length (least padding), batched."""
        return length_sorted_batches(self.forget + [self.retain[i] for i in self.scored_retain], self.pad)

    def scores(self, step: int = -1) -> dict:
        """RS = mean ES(retain) and FS = 1 - mean ES(forget) of the model as it is now, from one
        teacher-forced pass over forget + retain. At step 0 the trainable columns equal
        theta_o's (their added term is exactly 0), so every run reuses theta_o's scores: as
        the build recorded them (:meth:`_recorded`), else computed once per worker."""
        if step != 0:
            return self._summarise(self._per_item(self.model))
        if self._initial_scores is None:
            values = self._recorded("theta_o")
            self._initial_scores = self._summarise(values if values is not None else self._per_item(self.model))
        return dict(self._initial_scores)

    def scores_with_utility(self, step: int = -1) -> dict:
        """:meth:`scores` plus ``mu`` (TOFU model utility, :mod:`causalloc.utility`) and ``lfq``
        (log forget quality against theta_r) of the model as it is now; step 0 (theta_o) is
        computed once per testbed, like the scores."""
        if step == 0 and self._initial_utility is not None:
            return {**self.scores(step), **self._initial_utility}
        if self._utility_probe is None:
            self._utility_probe = UtilityProbe(self.tokenizer, self.testbed.splits.extra, self.max_length)
            self._forget_answers = AnswerScorer(self.tokenizer, truth_ratio_groups(self.scored_forget_items),
                                                self.max_length)
        tr = TruthRatio.from_nll(self._forget_answers.nll(self.model))
        values = {"mu": self._utility_probe(self.model).value,
                  "lfq": forget_quality(tr, self.truth_ratio_reference())[1]}
        if step == 0:
            self._initial_utility = dict(values)
        return {**self.scores(step), **values}

    def quant_theta_o(self) -> dict:
        """ES forget / retain of theta_o and of theta_o rounded to 4 bits
        (:func:`causalloc.quantize.quantize_linear_weights_`), once per testbed; the shared model
        is restored bitwise from the saved theta_o afterwards. A small model may not survive
        the rounding: this says how much retain ES the rounding alone costs."""
        if self._quant_theta_o is None:
            before = self.scores()
            with self.snapshot.restored_after(self.model):
                quantize_linear_weights_(self.model, QUANT_BITS, QUANT_GROUP)
                after = self.scores()
            self._quant_theta_o = {
                "bits": QUANT_BITS, "group_size": QUANT_GROUP,
                "es_forget": 1.0 - before["fs"], "es_retain": before["rs"],
                "es_forget_quantized": 1.0 - after["fs"], "es_retain_quantized": after["rs"]}
        return dict(self._quant_theta_o)

    def truth_ratio_reference(self):
        """Truth ratios of theta_r on the forget set (computed once, theta_r then released)."""
        if self._tr_reference is None:
            theta_r = self.testbed.load_model("theta_r", device=next(self.model.parameters()).device,
                                              dtype=self.run_dtype)
            self._tr_reference = truth_ratio(theta_r, self.tokenizer, self.scored_forget_items)
            del theta_r
        return self._tr_reference


def retain_subset(n_retain: int, retain_items: dict | None) -> np.ndarray:
    """Indices of the retain items RS is scored on: all, or ``retain_items["n"]`` of them drawn
    without replacement by a Generator seeded with ``retain_items["seed"]`` (sorted)."""
    if retain_items is None:
        return np.arange(n_retain)
    n = int(retain_items["n"])
    if n > n_retain:
        raise SpecError(f"eval.retain_items: {n} is more than the testbed's {n_retain} retain items")
    return np.sort(np.random.default_rng(int(retain_items["seed"])).choice(n_retain, n, replace=False))


def item_split(n_forget: int, n_retain: int, split: dict | None) -> dict | None:
    """Indices of the selection and evaluation parts of the forget and the retain items:
    ``round(selection_fraction * n)`` items of each set, drawn without replacement by a
    Generator seeded with ``split["seed"]`` (the testbed's), the rest for evaluation; at least
    one item in every part. None without a split."""
    if split is None:
        return None
    rng = np.random.default_rng(int(split["seed"]))
    parts = {}
    for name, n in (("forget", n_forget), ("retain", n_retain)):
        n_sel = round(float(split["selection_fraction"]) * n)
        if not 0 < n_sel < n:
            raise SpecError(f"tuning.selection_fraction: {split['selection_fraction']} of {n} {name} "
                            f"items leaves a part empty")
        order = rng.permutation(n)
        parts[f"{name}_sel"], parts[f"{name}_eval"] = np.sort(order[:n_sel]), np.sort(order[n_sel:])
    return parts


def check_fingerprint(loaded: str, expected: str, source: str) -> None:
    """ConstraintError unless the theta_o this worker loaded is the expected one (``source``
    says where the expected fingerprint comes from and what to do)."""
    if loaded != expected:
        raise ConstraintError(f"theta_o fingerprint mismatch: the weights loaded here have "
                              f"{loaded}, expected {expected} from {source}")


def _state(run: dict, context) -> TestbedState:
    cache = context.cache if context is not None else {}
    spec = run["testbed"]
    split, retain_items = run["eval"].get("split"), run["eval"].get("retain_items")
    key = ("testbed", spec.get("pinned") or testbed_config(spec).hash(), spec.get("run_dtype"),
           repr(split), repr(retain_items))
    if key not in cache:
        testbed = resolve_testbed(spec)
        cache[key] = TestbedState(testbed, testbed.config.max_length, split, retain_items,
                                  spec.get("run_dtype"))
    return cache[key]


def build_mask(spec: dict, budget: float, state: TestbedState) -> Mask:
    """The mask of a run from its resolved ``mask`` dict (see causalloc.runs.design)."""
    kind = spec["kind"]
    rng = np.random.default_rng(spec["seed"])
    sig = state.signature
    v_tgt = state.testbed.v_tgt
    if kind == "oracle":
        count = budget_to_count(budget, sig)
        return overlap_controlled(v_tgt, min(1.0, v_tgt.size / count), rng, budget=count)
    if kind == "random":
        return uniform_random(sig, budget, rng)
    if kind == "overlap":
        return overlap_controlled(v_tgt, float(spec["fraction"]), rng, budget=budget)
    if kind == "given":
        return given(spec["path"], sig)
    if kind == "attributed":
        return _attributed(spec, budget, state)
    reference = build_mask(spec["reference"], budget, state)
    if kind == "disjoint":
        return disjoint_random(reference, rng, budget=budget)
    if kind == "layer_matched":
        return layer_matched_random(reference, rng)
    raise SpecError(f"mask.kind: unknown {kind!r}")


def save_block_masks(spec, folder: Path) -> list[Path]:
    """Save the masks of the spec's first block (one per condition, draw 0) and V_tgt as
    ``folder/<condition>.json`` and ``folder/v_tgt.json``: the report reads them from
    ``<analysis folder>/masks`` for the mask-anatomy figure and the localization-accuracy
    table (precision and recall of V_tgt)."""
    from causalloc.runs.design import expand

    runs = expand(spec)
    first = [r for r in runs if r["block_id"] == runs[0]["block_id"] and r["mask_draw"] == 0]
    testbed = resolve_testbed(first[0]["testbed"])
    state = TestbedState(testbed, testbed.config.max_length,
                         run_dtype=first[0]["testbed"].get("run_dtype"))
    paths = [state.testbed.v_tgt.save(folder / "v_tgt.json")]
    for run in first:
        mask = build_mask(run["mask"], run["budget"], state)
        name = run["condition"].replace(":", "_")
        paths.append(replace(mask, name=run["condition"]).save(folder / f"{name}.json"))
    return paths


def _attributed(spec: dict, budget: float, state: TestbedState) -> Mask:
    from causalloc.attribution import localize
    from causalloc.attribution.inputs import scoring_batches

    hyper = dict(spec.get("hyper", {}))
    per_layer = bool(hyper.pop("per_layer", False))
    key = repr((spec["method"], sorted(hyper.items()), per_layer, budget, spec["seed"]))
    if key not in state.masks:
        result = localize(spec["method"], state.model, scoring_batches(state.forget, state.pad),
                          scoring_batches(state.retain, state.pad), budget, per_layer=per_layer,
                          seed=int(spec["seed"]) % 2**32, **hyper)
        state.masks[key] = result.mask
    return state.masks[key]


def execute(run: dict, context=None) -> dict:
    """Run one matched unlearning run and return the backend's result dict."""
    start = time.perf_counter()
    state = _state(run, context)
    if run.get("expected_theta_o_fingerprint"):
        check_fingerprint(state.theta_o_fingerprint, run["expected_theta_o_fingerprint"],
                          "the runs of this design done before (the testbed differs on this worker; "
                          "is the testbed cache, CAUSALLOC_CACHE, on storage every node shares?)")
    budget = run["budget"]
    mask = build_mask(run["mask"], budget, state)
    objective = make_objective(run["objective"]["name"], **run["objective"]["hyper"])
    config = TrainConfig(**train_settings(run), eval_every=int(run["eval"]["every"]))
    data = UnlearnData(state.forget, state.retain, state.pad, state.refusal)
    setup_seconds = time.perf_counter() - start

    wanted = set(run["eval"]["metrics"])
    track_utility = bool(wanted & {"mu95", "model_utility"})
    evaluate = state.scores_with_utility if track_utility else state.scores
    state.reference_cache.scope(run.get("block_id"))
    relearn = run.get("relearn") or {}
    strength_metrics = {m for m in wanted if RELEARN_STRENGTH_METRIC.fullmatch(m)}
    attacks = wanted & {"relearn_es", "relearn_recovery", "quant_recovery"} | strength_metrics
    keep = (_fs_at_rs95_rule(0.95)
            if attacks and relearn.get("start", "final") == "fs_at_rs95" else None)
    result, columns = unlearn(state.model, mask, objective, data, config, evaluate, state.snapshot,
                              state.reference_cache, keep=keep)
    metrics_start = time.perf_counter()
    points = [p for p in result.trajectory if "rs" in p]
    rs = [p["rs"] for p in points]
    fs = [p["fs"] for p in points]
    diverged = any(p.get("diverged") for p in result.trajectory)
    final = points[-1]
    metrics = {
        "aues": aues(rs, fs),
        "fs_at_rs95": fs_at_rs(rs, fs, rs[0], 0.95),
        "fs_final": float("nan") if diverged else final["fs"],
        "rs_final": float("nan") if diverged else final["rs"],
        "es_forget_final": float("nan") if diverged else 1.0 - final["fs"],
        "es_retain_final": float("nan") if diverged else final["rs"],
    }
    extra = {}
    if track_utility:
        value, eligible = mu95([p["lfq"] for p in points], [p["mu"] for p in points], points[0]["mu"])
        metrics.update(mu95=value, model_utility=float("nan") if diverged else final["mu"])
        extra = {"model_utility_theta_o": points[0]["mu"], "mu95_eligible_checkpoints": eligible}
    reference = state.theta_r_scores()
    if "steps_to_target" in wanted:
        metrics["steps_to_target"] = float("nan") if diverged else steps_to_target(
            [p["step"] for p in points], rs, fs, reference["fs"], config.steps)
    if "tuning" in run:
        metrics[f"select_{run['tuning']['criterion']}"] = _selection_score(run["tuning"]["criterion"], points)
    extra["flags"] = outcome_flags(rs, fs, reference["fs"], metrics.get("mu95"), points[0].get("lfq"),
                                   diverged=diverged)
    extra["fs_theta_r"] = reference["fs"]
    if wanted & {"forget_quality", "log_forget_quality"}:
        with columns:
            tr = truth_ratio(state.model, state.tokenizer, state.scored_forget_items)
        p, log_p = forget_quality(tr, state.truth_ratio_reference())
        metrics.update(forget_quality=p, log_forget_quality=log_p)
    if attacks:  # last: the columns may be set back to the start checkpoint here
        extra["attack_start"] = _attack_start(relearn.get("start", "final"), result, columns, points)
    if run.get("relearn") and wanted & {"relearn_es", "relearn_recovery"}:
        metrics["relearn_es"], metrics["relearn_recovery"] = _relearn(
            run["relearn"], state, columns, run["relearn"]["steps"], run["relearn"]["lr"])
    for steps, lr in relearn.get("strengths", []):
        name = relearn_metric_name(steps, lr)
        if name in wanted:
            metrics[name] = _relearn(run["relearn"], state, columns, steps, lr)[1]
    if "quant_recovery" in wanted:
        metrics["quant_recovery"] = _quant_recovery(state, columns)
        extra["quant_theta_o"] = state.quant_theta_o()
    overlap = mask.overlap(state.testbed.v_tgt) / mask.size
    kept = wanted | {f"select_{run['tuning']['criterion']}"} if "tuning" in run else wanted
    return {
        "metrics": {k: float(v) for k, v in metrics.items() if k in kept},
        "trajectory": [{k: p[k] for k in TRAJECTORY_KEYS if k in p} for p in points],
        "max_abs_change_outside_mask": result.max_abs_change_outside_mask,
        "max_abs_change_inside_mask": result.max_abs_change_inside_mask,
        "mask_size": mask.size,
        "mask_hash": mask.hash(),
        "theta_o_fingerprint": state.theta_o_fingerprint,
        "matching_digest": result.matching_digest,
        "overlap_with_oracle": overlap,
        "diverged": diverged,
        **extra,
        "timings": {"setup": setup_seconds, "train": result.seconds_train, "eval": result.seconds_eval,
                    "metrics": time.perf_counter() - metrics_start},
    }


#: what a trajectory point keeps: step, scores (of the evaluation items in a tuned design, with
#: the selection items' as rs_sel / fs_sel), model utility and log forget quality when tracked
TRAJECTORY_KEYS = ("step", "rs", "fs", "rs_sel", "fs_sel", "mu", "lfq")


def _selection_score(criterion: str, points: list[dict]) -> float:
    """A tuned run's criterion on the selection items' scores (``rs_sel``, ``fs_sel``)."""
    rs, fs = [p["rs_sel"] for p in points], [p["fs_sel"] for p in points]
    if criterion == "aues":
        return aues(rs, fs)
    if criterion == "fs_at_rs95":
        return fs_at_rs(rs, fs, rs[0], 0.95)
    raise SpecError(f"tuning.criterion: unknown {criterion!r}")


def _fs_at_rs95_rule(fraction: float):
    """``keep`` rule of :func:`causalloc.unlearn.unlearn` that keeps the checkpoint defining
    FS@RS95 (:func:`causalloc.frontier.fs_at_rs`): the first checkpoint reaching the highest FS
    among those with RS >= fraction * RS_0 (step 0 always qualifies)."""
    best = {"fs": -np.inf}

    def keep(trajectory: list[dict]) -> bool:
        point = trajectory[-1]
        if "rs" not in point or point["rs"] < fraction * trajectory[0]["rs"] or point["fs"] <= best["fs"]:
            return False
        best["fs"] = point["fs"]
        return True

    return keep


def _attack_start(start: str, result, columns, points: list[dict]) -> dict:
    """Set ``columns`` to the checkpoint the attacks start from and say which it is:
    ``final`` leaves them as trained; ``fs_at_rs95`` copies back the kept FS@RS95 checkpoint
    (step 0, theta_o itself, when no later checkpoint kept RS >= 0.95 RS_0)."""
    if start == "final":
        return {"rule": start, "step": points[-1]["step"], "rs": points[-1]["rs"], "fs": points[-1]["fs"]}
    if start != "fs_at_rs95":
        raise SpecError(f"relearn.start: unknown {start!r}")
    kept = result.kept
    with torch.no_grad():
        for column, value in zip(columns.columns, kept["columns"]):
            column.copy_(value)
    point = next(p for p in points if p["step"] == kept["step"])
    return {"rule": start, "step": kept["step"], "rs": point["rs"], "fs": point["fs"]}


def _quant_recovery(state: TestbedState, columns) -> float:
    """``quant_recovery``: ES(forget) of the unlearned model with every decoder linear weight
    rounded to 4 bits (RTN, groups of 64 along the input dimension; causalloc.quantize) minus
    its ES(forget) unrounded (Zhang et al., ICLR 2025). The columns are merged into the shared
    model, which is restored bitwise from the saved theta_o afterwards."""
    with state.snapshot.restored_after(state.model):
        columns.merge_into(state.model)
        before = 1.0 - state.scores()["fs"]
        quantize_linear_weights_(state.model, QUANT_BITS, QUANT_GROUP)
        after = 1.0 - state.scores()["fs"]
    return after - before


def _relearn(spec: dict, state: TestbedState, columns, steps: int | None = None,
             lr: float | None = None) -> tuple[float, float]:
    """Relearning attack of ``steps`` at ``lr`` (default: the spec's) on the unlearned model: fine-tune all weights on a seeded
    ``fraction`` of the forget items (the same split for every run of a block), ES on the
    rest: ``(relearn_es, relearn_recovery)``, the held-out ES after the attack and what the
    attack gained on those items (ES after minus ES of the unlearned model before it; the
    resurfacing Lacuna measures). The trained columns are merged into the shared model itself and the attack trains
    it in place (no copy of the model); it is then restored bitwise from the saved theta_o
    and checked against the snapshot's digests."""
    n_train = max(1, round(spec["fraction"] * len(state.forget)))
    if n_train >= len(state.forget):
        raise SpecError("relearn.fraction: leaves no forget example to evaluate on")
    order = np.random.default_rng(spec["seed"]).permutation(len(state.forget))
    train = eval_batches([state.forget[i] for i in order[:n_train]], state.pad, 8)
    held_out = eval_batches([state.forget[i] for i in order[n_train:]], state.pad)
    with state.snapshot.restored_after(state.model):
        columns.merge_into(state.model)
        steps = spec["steps"] if steps is None else steps
        lr = spec["lr"] if lr is None else lr
        outcome = relearning_attack(state.model, train, held_out, int(steps), float(lr),
                                    int(spec["seed"]) % 2**32, in_place=True)
    return outcome.es, outcome.es - outcome.curve[0][1]
