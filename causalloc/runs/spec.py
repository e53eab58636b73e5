"""Experiment specs: a TOML file -> a validated, fully resolved :class:`ExperimentSpec`.

Every key of the file is checked: unknown keys, wrong types and impossible values raise
:class:`~causalloc.errors.SpecError` whose message starts with the dotted key path
(``conditions[1].strategy: unknown strategy 'oracel' ...``) and ends with the file name.
Defaults are written into the resolved spec (training settings and objective
hyperparameters come from the trainer's ``TrainConfig`` and the objective registry when
those modules are importable), so the run ids derived from it change whenever a setting
that can change a result changes. ``analyses/example_tiny.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from causalloc.devices import DEVICE_FORMS, DTYPES, check_device
from causalloc.errors import CausallocError, SpecError
from causalloc.schema import MISSING, Checker, is_number
from causalloc.vocab import (
    DEFAULT_RUN_METRICS,
    RANDOM_KINDS,
    REFERENCE_KINDS,
    RUN_METRICS,
    ConditionError,
    metric,
    parse_strategy,
    suggest,
)

TESTBED_KINDS = ("tiny", "tofu", "smollm2", "hf")
#: a Hugging Face hub model id: ``name`` or ``owner/name``
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
#: objectives known when the registry (causalloc.unlearn.objectives) cannot be imported
FALLBACK_ALGORITHMS = ("ga", "graddiff", "wga", "npo", "dpo", "rmu")
#: attribution methods known when the registry (causalloc.attribution) cannot be imported
FALLBACK_METHODS = ("activations", "memflex", "wagle", "grad_x_weight", "weight_norm",
                    "hard_concrete", "slimming", "random")
OPTIMIZERS = ("adamw", "adam", "sgd")
#: one relearning-recovery metric per attack strength of ``[relearn] strengths``
#: (:func:`relearn_metric_name`); such names are known when the spec lists that strength
RELEARN_STRENGTH_METRIC = re.compile(r"relearn_recovery_s(\d+)_lr(.+)")
#: where the relearning attacks (and the quantization probe) start: the run's last step, or
#: the checkpoint that defines FS@RS95 (max FS among checkpoints with RS >= 0.95 RS_0)
RELEARN_STARTS = ("final", "fs_at_rs95")
#: TrainConfig fields a spec may not set: the seed comes from ``seeds``, the schedule from [eval]
_TRAIN_FIELDS_NOT_IN_SPEC = ("seed", "eval_every")


@dataclass(frozen=True)
class TestbedSpec:
    """The controlled testbed every run starts from (theta_o with its target units V_tgt).

    ``build`` is passed through unchanged to the testbed builder (its own hyperparameters).
    ``model`` (kind ``hf``: a hub id or an absolute model directory), ``dtype``, ``device``
    and the training keys ``batch_size``, ``grad_accum``, ``gradient_checkpointing`` and
    ``max_length`` are None when not set (the testbed's defaults apply; a spec without them
    keeps its run ids). ``run_dtype`` is the dtype the runs load theta_o (and theta_r) in,
    None: the testbed's ``dtype``; it is part of the run ids but not of what the testbed is
    (a bfloat16 run on a testbed built and stored in float32).
    """

    __test__ = False  # not a pytest test class despite the name

    kind: str = "tiny"
    budget: float = 0.1
    seed: int = 0
    n_authors: int = 20
    n_forget_authors: int = 2
    n_questions: int | None = 20
    tofu_path: str | None = None
    build: dict = field(default_factory=dict)
    model: str | None = None
    dtype: str | None = None
    device: str | None = None
    run_dtype: str | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    gradient_checkpointing: bool | None = None
    max_length: int | None = None
    #: a pinned testbed: the file (``[testbed] file``, resolved path) and its theta_o fingerprint
    file: str | None = None
    pinned: str | None = None
    #: replicated testbeds (``[testbed] seeds``): one independent testbed per seed (V_tgt, the
    #: generated data, the model init and the injection order all drawn from it); None: one
    #: testbed, built with ``seed``
    seeds: tuple[int, ...] | None = None

    @property
    def model_label(self) -> str:
        """Block-column label of the model: ``smollm2``, the tiny word-level ``tiny``, or
        for kind ``hf`` the hub id or the model directory's name."""
        if self.kind == "hf":
            return Path(self.model).name if Path(self.model).is_absolute() else self.model
        return "smollm2" if self.kind == "smollm2" else "tiny"

    @property
    def data(self) -> str:
        """Block-column label of the data: ``tofu`` when a TOFU path is given, else ``generated``."""
        return "tofu" if self.tofu_path else "generated"

    def to_dict(self) -> dict:
        """The set keys; a pinned testbed is named by its fingerprint (``pinned``), not by
        where its file lies on this machine, so run ids do not depend on that place."""
        return {key: (list(value) if isinstance(value, tuple) else value)
                for key, value in dataclasses.asdict(self).items()
                if value is not None and key != "file"}

    @property
    def replicated(self) -> bool:
        """Several independent testbeds: blocks nest in testbeds (block column ``testbed``)."""
        return self.seeds is not None

    def replicates(self) -> list[tuple[int, dict]]:
        """``(testbed seed, testbed table of one run)`` per testbed of the design: the one
        testbed, or one per seed of ``seeds`` (each table has that ``seed`` and no ``seeds``)."""
        if not self.replicated:
            return [(self.seed, self.to_dict())]
        base = {k: v for k, v in self.to_dict().items() if k != "seeds"}
        return [(seed, {**base, "seed": seed}) for seed in self.seeds]


@dataclass(frozen=True)
class ConditionSpec:
    """One mask strategy. ``argument`` is the part after ``kind:`` (method, reference
    condition name, overlap fraction or mask path); None for ``oracle`` and ``random``."""

    name: str
    strategy: str
    kind: str
    argument: str | float | None = None
    #: draws per block of a random-type condition when it differs from the spec's k_random
    k: int | None = None

    @property
    def is_random(self) -> bool:
        return self.kind in RANDOM_KINDS

    def draws(self, k_random: int) -> int:
        """Runs per block: ``k`` (else ``k_random``) for a random-type condition, else 1."""
        return (self.k or k_random) if self.is_random else 1

    @property
    def reference(self) -> str | None:
        """Name of the condition whose mask this one is drawn against (design.json ``reference``)."""
        if self.kind in REFERENCE_KINDS:
            return str(self.argument)
        return "oracle" if self.kind == "overlap" else None


@dataclass(frozen=True)
class AlgorithmSpec:
    """An unlearning objective with its training settings and hyperparameters.

    ``label`` is the value of the ``algorithm`` block column (defaults to ``name``; set it to
    compare two settings of the same objective).
    """

    label: str
    name: str
    train: dict
    hyper: dict
    #: tuning grid: training key -> values (``lr = [3e-3, 1e-2]`` in the spec); every condition
    #: and draw of a block runs every grid point; ``train`` then holds no value for these keys
    grid: dict = field(default_factory=dict)

    def grid_points(self) -> list[dict]:
        """Every combination of the grid's values, in spec order ([{}] without a grid)."""
        points = [{}]
        for key, values in self.grid.items():
            points = [{**point, key: value} for point in points for value in values]
        return points


@dataclass(frozen=True)
class TuningSpec:
    """How a tuned design picks each arm's setting (``[tuning]``).

    The forget and the retain items are each split once per testbed, by a seeded draw, into a
    *selection* part (``selection_fraction`` of the items) and an *evaluation* part (the rest).
    Training uses all forget and retain items; the selection part only scores the checkpoints
    that choose the setting (``select_<criterion>``), the evaluation part those that report
    it (every metric under its usual name). Per block, condition and draw the grid point with
    the best ``select_<criterion>`` is kept (:func:`causalloc.stats.tuning.select_runs`).
    """

    criterion: str = "aues"
    selection_fraction: float = 0.5

    def split(self, testbed_seed: int) -> dict:
        """The run's ``eval.split``: the fraction and the seed of the item split of a testbed."""
        from causalloc.runs.design import derive_seed

        return {"selection_fraction": self.selection_fraction,
                "seed": derive_seed("selection split", testbed_seed)}


#: criteria a tuned design may select on: computed from the checkpoints' (RS, FS) alone, so the
#: selection split can score them
TUNING_CRITERIA = ("aues", "fs_at_rs95")
#: training keys a spec may give as a list of values (a tuning grid)
GRID_KEYS = ("lr", "steps")


@dataclass(frozen=True)
class EvalSpec:
    """When and on what runs are scored: a checkpoint every ``every`` steps (and the last),
    the ``metrics``, and optionally RS on a seeded subset of ``retain_items`` retain items
    (one per testbed; training still uses every retain item) to cut evaluation cost."""

    every: int = 10
    metrics: tuple[str, ...] = DEFAULT_RUN_METRICS
    retain_items: int | None = None

    def for_testbed(self, testbed_seed: int) -> dict:
        """The run's ``eval`` table (``retain_items`` with its seed only when set)."""
        from causalloc.runs.design import derive_seed

        table = {"every": self.every, "metrics": list(self.metrics)}
        if self.retain_items is not None:
            table["retain_items"] = {"n": self.retain_items,
                                     "seed": derive_seed("retain items", testbed_seed)}
        return table


@dataclass(frozen=True)
class RelearnSpec:
    """Relearning attack after unlearning: ``steps`` of fine-tuning at ``lr`` on a
    ``fraction`` of the forget set, ES measured on the rest."""

    steps: int = 10
    lr: float = 1e-3
    fraction: float = 0.5
    #: further attacks ``(steps, lr)``, each giving ``relearn_recovery_s{steps}_lr{lr:g}``
    strengths: tuple[tuple[int, float], ...] = ()
    #: ``final`` (the run's last step) or ``fs_at_rs95`` (its matched-utility checkpoint)
    start: str = "final"

    def metric_names(self) -> tuple[str, ...]:
        """The per-strength metric names, in the order of ``strengths``."""
        return tuple(relearn_metric_name(steps, lr) for steps, lr in self.strengths)

    def to_dict(self) -> dict:
        """Plain data; ``strengths`` and ``start`` only when set, so that the hashes of specs
        written before they existed do not change."""
        data = {"steps": self.steps, "lr": self.lr, "fraction": self.fraction}
        if self.strengths:
            data["strengths"] = [list(s) for s in self.strengths]
        if self.start != "final":
            data["start"] = self.start
        return data


def relearn_metric_name(steps: int, lr: float) -> str:
    """``relearn_recovery_s{steps}_lr{lr:g}``, e.g. ``relearn_recovery_s20_lr0.001``."""
    return f"relearn_recovery_s{int(steps)}_lr{float(lr):g}"


@dataclass(frozen=True)
class ExecutionSpec:
    """Where runs execute (``[execution]``); changes no result, so it is not in the spec hash.

    ``gpus_per_run``: GPUs each Ray task requests (``num_gpus``; fractions share a GPU);
    the ``--gpus-per-run`` flag of ``causalloc run`` overrides it.
    """

    gpus_per_run: float = 0.0


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    testbed: TestbedSpec
    budgets: tuple[float, ...]
    seeds: tuple[int, ...]
    k_random: int
    conditions: tuple[ConditionSpec, ...]
    algorithms: tuple[AlgorithmSpec, ...]
    eval: EvalSpec
    relearn: RelearnSpec | None = None
    localization: dict = field(default_factory=dict)
    description: str = ""
    source: str | None = None
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    tuning: TuningSpec | None = None

    def condition(self, name: str) -> ConditionSpec:
        return next(c for c in self.conditions if c.name == name)

    def to_dict(self) -> dict:
        """The resolved spec as plain JSON data (``source`` excluded)."""
        data = dataclasses.asdict(self)
        data.pop("source")
        data["testbed"] = self.testbed.to_dict()
        if self.relearn is not None:
            data["relearn"] = self.relearn.to_dict()
        if self.tuning is None:  # specs written before tuning existed keep their hashes
            data.pop("tuning")
        for algorithm in data["algorithms"]:
            if not algorithm["grid"]:
                algorithm.pop("grid")
        if self.eval.retain_items is None:
            data["eval"].pop("retain_items")
        for condition in data["conditions"]:
            if condition["k"] is None:
                condition.pop("k")
        return data

    @property
    def spec_hash(self) -> str:
        """sha256 of the resolved spec without ``execution`` (where runs execute changes no result)."""
        return sha256_json({k: v for k, v in self.to_dict().items() if k != "execution"})


def canonical_json(data: Any) -> str:
    """The one JSON text of ``data`` that is hashed: sorted keys, no spaces, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_json(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


# loading -----------------------------------------------------------------------------
def load_spec(
    path: str | Path,
    algorithms: Mapping[str, Mapping[str, Any] | None] | None = None,
    methods: Mapping[str, Mapping[str, Any] | None] | None = None,
    train_defaults: Mapping[str, Any] | None = None,
) -> ExperimentSpec:
    """Read and validate a TOML experiment spec.

    ``algorithms`` / ``methods`` map each known objective / attribution method to its
    hyperparameter defaults (None: any hyperparameter accepted, none filled in);
    ``train_defaults`` gives the training settings. Each defaults to the package's
    registries when they can be imported (see :func:`known_algorithms`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    return parse_spec(data, source=str(path), base_dir=path.resolve().parent,
                      algorithms=algorithms, methods=methods, train_defaults=train_defaults,
                      default_name=path.stem)


def parse_spec(
    data: Mapping[str, Any],
    source: str = "<spec>",
    base_dir: str | Path | None = None,
    algorithms: Mapping[str, Mapping[str, Any] | None] | None = None,
    methods: Mapping[str, Mapping[str, Any] | None] | None = None,
    train_defaults: Mapping[str, Any] | None = None,
    default_name: str = "experiment",
) -> ExperimentSpec:
    """Validate an already-parsed spec table (see :func:`load_spec`); relative paths in it
    are resolved against ``base_dir`` (default: the current directory)."""
    check = Checker(source, base_dir)
    algorithms = known_algorithms() if algorithms is None else algorithms
    methods = known_methods() if methods is None else methods
    train_defaults = known_train_defaults() if train_defaults is None else train_defaults
    top = check.table(data, "")
    check.keys(top, "", ("name", "description", "testbed", "budgets", "seeds", "k_random",
                         "conditions", "algorithms", "eval", "relearn", "localization", "execution",
                         "tuning"))
    testbed = _parse_testbed(check, top.get("testbed", {}))
    budgets = tuple(check.number_list(top, "budgets", low=0.0, high=1.0, low_open=True))
    seeds = tuple(int(s) for s in check.int_list(top, "seeds", low=0))
    k_random = check.integer(top, "k_random", "k_random", default=1, low=1)
    localization = _parse_localization(check, top.get("localization", {}), methods)
    conditions = _parse_conditions(check, top, methods, budgets)
    algos = _parse_algorithms(check, top, algorithms, train_defaults)
    relearn = _parse_relearn(check, top["relearn"]) if "relearn" in top else None
    eval_spec = _parse_eval(check, top.get("eval", {}), relearn)
    tuning = _parse_tuning(check, top, algos, eval_spec)
    for condition in conditions:  # attribution hyperparameters get their defaults filled in
        if condition.kind == "attributed" and condition.argument not in localization:
            localization[condition.argument] = dict(methods.get(condition.argument) or {})
    return ExperimentSpec(
        name=check.string(top, "name", "name", default=default_name),
        description=check.string(top, "description", "description", default=""),
        testbed=testbed, budgets=budgets, seeds=seeds, k_random=k_random,
        conditions=conditions, algorithms=algos, eval=eval_spec, relearn=relearn,
        localization=localization, source=source,
        execution=_parse_execution(check, top.get("execution", {})), tuning=tuning,
    )


def known_algorithms() -> dict[str, dict | None]:
    """Objective name -> hyperparameter defaults, from ``causalloc.unlearn.base.OBJECTIVES``
    after importing the built-in objectives; the fixed list (unchecked) if that fails."""
    try:
        importlib.import_module("causalloc.unlearn.objectives")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("causalloc", "torch")):
            raise
        return {name: None for name in FALLBACK_ALGORITHMS}
    from causalloc.unlearn.base import OBJECTIVES

    return {name: _dataclass_defaults(cls) for name, cls in OBJECTIVES.items()}


def known_methods() -> dict[str, dict | None]:
    """Attribution method name -> hyperparameter defaults (plus ``per_layer``, an argument of
    ``localize``), from ``causalloc.attribution.METHODS``; the fixed list (unchecked) if that
    cannot be imported."""
    try:
        registry = importlib.import_module("causalloc.attribution").METHODS
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("causalloc", "torch")):
            raise
        return {name: None for name in FALLBACK_METHODS}
    return {name: {"per_layer": False, **method.defaults} for name, method in registry.items()}


def _objective_train_defaults(name: str, train_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """An objective's own training defaults (``Objective.train_defaults``, e.g. DPO's
    higher lr); none when the registry is not importable or the trainer defaults are not
    known."""
    if not train_defaults:
        return {}
    try:
        from causalloc.unlearn.base import OBJECTIVES
    except ModuleNotFoundError:
        return {}
    cls = OBJECTIVES.get(name)
    return dict(cls.train_defaults) if cls is not None else {}


def known_train_defaults() -> dict[str, Any]:
    """Training settings with their defaults, from the trainer's ``TrainConfig``
    (empty, i.e. the fixed list of keys without defaults, if it cannot be imported)."""
    try:
        trainer = importlib.import_module("causalloc.unlearn.trainer")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("causalloc", "torch")):
            raise
        return {}
    defaults = _dataclass_defaults(trainer.TrainConfig)
    return {key: value for key, value in defaults.items() if key not in _TRAIN_FIELDS_NOT_IN_SPEC}


def _dataclass_defaults(cls) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# sections ----------------------------------------------------------------------------
def _parse_testbed(check: Checker, raw: Any) -> TestbedSpec:
    table = check.table(raw, "testbed")
    if "file" in table:
        return _parse_pinned_testbed(check, table)
    check.keys(table, "testbed", ("kind", "budget", "seed", "seeds", "n_authors", "n_forget_authors",
                                  "n_questions", "tofu_path", "build", "model", "dtype", "device",
                                  "run_dtype", "batch_size", "grad_accum", "gradient_checkpointing",
                                  "max_length"))
    seeds = None
    if "seeds" in table:
        if "seed" in table:
            check.fail("testbed.seeds", "give either seed (one testbed) or seeds (replicated testbeds), not both")
        seeds = tuple(int(s) for s in check.int_list({"testbed.seeds": table["seeds"]}, "testbed.seeds", low=0))
        if len(seeds) < 2:
            check.fail("testbed.seeds", f"replicated testbeds need at least 2 seeds, got {list(seeds)} "
                                        "(one testbed: use seed)")
    kind = check.choice(table, "kind", "testbed.kind", TESTBED_KINDS, default="tiny")
    tofu_path = check.path(table, "tofu_path", "testbed.tofu_path", must_exist=True)
    if kind == "tofu" and tofu_path is None:
        check.fail("testbed.tofu_path", "required when kind = 'tofu' (the TOFU data directory)")
    if kind == "tiny" and tofu_path is not None:
        check.fail("testbed.tofu_path", "kind 'tiny' trains on generated authors; for TOFU data use "
                                        "kind 'tofu' (the tiny model), 'smollm2' or 'hf'")
    n_authors = check.integer(table, "n_authors", "testbed.n_authors", default=20, low=2)
    n_forget = check.integer(table, "n_forget_authors", "testbed.n_forget_authors", default=2, low=1)
    if n_forget >= n_authors:
        check.fail("testbed.n_forget_authors",
                   f"must be smaller than n_authors ({n_authors}), got {n_forget}")
    if tofu_path is not None and "n_questions" in table:
        check.fail("testbed.n_questions", "only for generated data (TOFU has 20 questions per author)")
    n_questions = None if tofu_path else check.integer(table, "n_questions", "testbed.n_questions",
                                                       default=20, low=1)
    return TestbedSpec(
        kind=kind,
        budget=check.number(table, "budget", "testbed.budget", default=0.1, low=0.0, high=1.0,
                            low_open=True),
        seed=seeds[0] if seeds else check.integer(table, "seed", "testbed.seed", default=0, low=0),
        seeds=seeds,
        n_authors=n_authors, n_forget_authors=n_forget, n_questions=n_questions,
        tofu_path=tofu_path, build=check.free_table(table, "build", "testbed.build"),
        **_parse_testbed_model(check, table, kind),
    )


def _parse_pinned_testbed(check: Checker, table: dict) -> TestbedSpec:
    """``[testbed] file = "PATH"``: a testbed file (``causalloc testbed export``) fixes theta_o,
    theta_r, V_tgt, tokenizer and data, so no key that would build another testbed may stand
    beside it (``device`` and ``run_dtype`` may: they say where and in which precision runs
    compute, not what the testbed is)."""
    from causalloc.testbed_file import read_record

    for key in table:
        if key not in ("file", "device", "run_dtype"):
            check.fail(f"testbed.{key}", "not allowed beside testbed.file: the file fixes the testbed "
                                         "(its record holds the config)")
    file = check.path(table, "file", "testbed.file", must_exist=True)
    try:
        record = read_record(file)
    except CausallocError as exc:
        check.fail("testbed.file", str(exc))
    config = record["config"]
    run_settings = _parse_testbed_model(check, table, config["kind"])
    return TestbedSpec(
        kind=config["kind"], budget=config["budget"], seed=config["target_seed"],
        n_authors=config["n_authors"], n_forget_authors=config["n_forget_authors"],
        n_questions=None if config.get("tofu_path") else config["n_questions"],
        tofu_path=config.get("tofu_path"), model=config.get("model"), dtype=config.get("dtype"),
        device=run_settings.get("device"), run_dtype=run_settings.get("run_dtype"),
        max_length=config.get("max_length"), file=file,
        pinned=record["theta_o_fingerprint"])


def _parse_testbed_model(check: Checker, table: dict, kind: str) -> dict:
    """The model, precision, placement and training keys of [testbed] (those set)."""
    out = {}
    if "model" in table:
        if kind != "hf":
            check.fail("testbed.model", f"only for kind = 'hf' (kind is {kind!r})")
        out["model"] = _model_source(check, check.string(table, "model", "testbed.model"))
    elif kind == "hf":
        check.fail("testbed.model", "required when kind = 'hf' (a hub id such as "
                   "'meta-llama/Llama-3.1-8B-Instruct' or a model directory)")
    for key in ("dtype", "run_dtype"):
        if key in table:
            out[key] = check.choice(table, key, f"testbed.{key}", DTYPES)
    if "device" in table:
        device = check.string(table, "device", "testbed.device")
        try:
            out["device"] = check_device(device)
        except SpecError:
            check.fail("testbed.device", f"unknown device {device!r} (known forms: "
                       f"{', '.join(DEVICE_FORMS)})")
    for key, low in (("batch_size", 1), ("grad_accum", 1), ("max_length", 1)):
        if key in table:
            out[key] = check.integer(table, key, f"testbed.{key}", low=low)
    if "gradient_checkpointing" in table:
        if not isinstance(table["gradient_checkpointing"], bool):
            check.fail("testbed.gradient_checkpointing",
                       f"must be true or false, got {table['gradient_checkpointing']!r}")
        out["gradient_checkpointing"] = table["gradient_checkpointing"]
    return out


def _model_source(check: Checker, value: str) -> str:
    """An existing model directory (absolute; relative to the spec's folder) or a hub id."""
    local = (check.base_dir / Path(value).expanduser()).resolve()
    if local.is_dir():
        return str(local)
    if value.startswith((".", "/", "~")) or not HUB_ID.fullmatch(value):
        check.fail("testbed.model", f"{value!r} is neither a model directory (looked at {local}) "
                   "nor a hub id (owner/name)")
    return value


def _parse_conditions(check: Checker, top: dict, methods: Mapping, budgets) -> tuple:
    raw = check.required(top, "conditions", "conditions")
    if not isinstance(raw, list) or not raw:
        check.fail("conditions", "must be a non-empty array of tables ([[conditions]])")
    conditions: list[ConditionSpec] = []
    for i, item in enumerate(raw):
        path = f"conditions[{i}]"
        table = check.table(item, path)
        check.keys(table, path, ("name", "strategy", "k"))
        strategy = check.string(table, "strategy", f"{path}.strategy")
        kind, argument = _parse_strategy(check, strategy, f"{path}.strategy", methods)
        k = check.integer(table, "k", f"{path}.k", low=1) if "k" in table else None
        if k is not None and kind not in RANDOM_KINDS:
            check.fail(f"{path}.k", f"only random-type conditions ({', '.join(RANDOM_KINDS)}) take "
                                    f"draws; {strategy!r} is deterministic")
        name = check.string(table, "name", f"{path}.name", default=strategy)
        if not name:
            check.fail(f"{path}.name", "must not be empty")
        if any(c.name == name for c in conditions):
            check.fail(f"{path}.name", f"duplicate condition name {name!r}")
        conditions.append(ConditionSpec(name=name, strategy=strategy, kind=kind, argument=argument, k=k))
    names = [c.name for c in conditions]
    for i, condition in enumerate(conditions):
        if condition.kind in REFERENCE_KINDS and condition.argument not in names:
            check.fail(f"conditions[{i}].strategy",
                       f"refers to condition {condition.argument!r}, which is not defined "
                       f"(defined: {', '.join(names)}){suggest(condition.argument, names)}")
    _check_acyclic(check, conditions)
    if any(c.kind == "disjoint" for c in conditions):
        for i, budget in enumerate(budgets):
            if budget > 0.5:
                check.fail(f"budgets[{i}]", f"{budget} leaves too few units outside the reference "
                           "mask for a disjoint condition (needs budget <= 0.5)")
    return tuple(conditions)


def _parse_strategy(check: Checker, strategy: str, path: str, methods: Mapping):
    """(kind, argument) of a condition's strategy: the grammar from :func:`causalloc.vocab.parse_strategy`,
    then whether its method is known and its mask file exists."""
    try:
        kind, argument = parse_strategy(strategy)
    except ConditionError as exc:
        check.fail(path, str(exc))
    if kind == "attributed" and argument not in methods:
        check.fail(path, f"unknown attribution method {argument!r} (known: "
                   f"{', '.join(sorted(methods))}){suggest(argument, methods)}")
    if kind == "given":
        return kind, check.resolve_path(argument, path, must_exist=True)
    return kind, argument


def _check_acyclic(check: Checker, conditions: list[ConditionSpec]) -> None:
    """Reference chains (disjoint:/layer_matched:) must end in a condition without reference."""
    by_name = {c.name: c for c in conditions}
    for i, start in enumerate(conditions):
        chain = [start.name]
        current = start
        while current.kind in REFERENCE_KINDS:
            current = by_name[current.argument]
            if current.name in chain:
                check.fail(f"conditions[{i}].strategy",
                           f"reference cycle {' -> '.join(chain + [current.name])}")
            chain.append(current.name)


def _parse_algorithms(check: Checker, top: dict, known: Mapping, train_defaults: Mapping) -> tuple:
    raw = check.required(top, "algorithms", "algorithms")
    if not isinstance(raw, list) or not raw:
        check.fail("algorithms", "must be a non-empty array of tables ([[algorithms]])")
    train_keys = tuple(train_defaults) or ("steps", "lr", "batch_size", "optimizer",
                                           "weight_decay", "momentum", "betas", "grad_clip")
    algorithms: list[AlgorithmSpec] = []
    for i, item in enumerate(raw):
        path = f"algorithms[{i}]"
        table = check.table(item, path)
        name = check.choice(table, "name", f"{path}.name", tuple(known))
        label = check.string(table, "label", f"{path}.label", default=name)
        if any(a.label == label for a in algorithms):
            check.fail(f"{path}.label", f"duplicate algorithm label {label!r} (set a distinct "
                       "`label` to run the same objective with other settings)")
        hyper_defaults = known[name]
        allowed = ("name", "label") + train_keys + tuple(hyper_defaults or ())
        for key in _TRAIN_FIELDS_NOT_IN_SPEC:
            if key in table:
                check.fail(f"{path}.{key}", "set by the design (`seeds` / [eval].every), not per algorithm")
        if hyper_defaults is not None:
            check.keys(table, path, allowed)
        defaults = {**train_defaults, **_objective_train_defaults(name, train_defaults)}
        grid = {key: _check_grid(check, table, key, f"{path}.{key}", defaults)
                for key in GRID_KEYS if isinstance(table.get(key), list)}
        train = {key: _check_train_value(check, table, key, f"{path}.{key}", defaults)
                 for key in train_keys if (key in table or key in defaults) and key not in grid}
        hyper = dict(hyper_defaults or {})
        for key, value in table.items():
            if key in ("name", "label") or key in train_keys:
                continue
            if hyper_defaults is not None and key in hyper_defaults:
                value = check.like(value, hyper_defaults[key], f"{path}.{key}")
            hyper[key] = check.json_value(value, f"{path}.{key}")
        algorithms.append(AlgorithmSpec(label=label, name=name, train=train, hyper=hyper, grid=grid))
    return tuple(algorithms)


def _check_grid(check: Checker, table: dict, key: str, path: str, defaults: Mapping) -> list:
    """A tuning grid ``key = [v1, v2, ...]``: each value valid for ``key``, distinct, at least two."""
    values = table[key]
    if len(values) < 2:
        check.fail(path, f"a tuning grid needs at least 2 values, got {values!r} (one value: {key} = value)")
    checked = [_check_train_value(check, {key: value}, key, f"{path}[{i}]", defaults)
               for i, value in enumerate(values)]
    if len(set(checked)) < len(checked):
        check.fail(path, f"duplicate values in the grid {values!r}")
    return checked


def _parse_tuning(check: Checker, top: dict, algorithms: tuple, eval_spec: EvalSpec) -> TuningSpec | None:
    """``[tuning]``: required by a spec with a grid (``lr = [...]``); without one it still
    splits the items (selection and evaluation) so that a fixed-dose design is scored alike."""
    gridded = [a.label for a in algorithms if a.grid]
    if "tuning" not in top:
        if gridded:
            check.fail("tuning", f"algorithms {', '.join(gridded)} give a grid: add a [tuning] table "
                                 "(criterion, selection_fraction) saying how each arm's setting is chosen")
        return None
    table = check.table(top["tuning"], "tuning")
    check.keys(table, "tuning", ("criterion", "selection_fraction"))
    criterion = check.choice(table, "criterion", "tuning.criterion", TUNING_CRITERIA, default="aues")
    if criterion not in eval_spec.metrics:
        check.fail("tuning.criterion", f"{criterion!r} must be one of eval.metrics ({', '.join(eval_spec.metrics)})")
    fraction = check.number(table, "selection_fraction", "tuning.selection_fraction", default=0.5,
                            low=0.0, high=1.0, low_open=True, high_open=True)
    return TuningSpec(criterion=criterion, selection_fraction=fraction)


def _check_train_value(check: Checker, table: dict, key: str, path: str, defaults: Mapping):
    default = defaults.get(key, MISSING)
    if key in ("steps", "batch_size"):
        return check.integer(table, key, path, default=default, low=1)
    if key == "lr":
        return check.number(table, key, path, default=default, low=0.0, low_open=True)
    if key == "optimizer":
        return check.choice(table, key, path, OPTIMIZERS, default=default)
    if key in ("weight_decay", "grad_clip"):
        if key == "grad_clip" and table.get(key, default) is None:
            return None
        return check.number(table, key, path, default=default, low=0.0)
    if key == "momentum":
        return check.number(table, key, path, default=default, low=0.0, high=1.0, high_open=True)
    if key == "betas":
        value = table.get(key, default)
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(is_number(b) and 0.0 <= b < 1.0 for b in value)):
            check.fail(path, f"must be two numbers in [0, 1), got {value!r}")
        return [float(b) for b in value]
    return check.json_value(table.get(key, default), path)


def _parse_eval(check: Checker, raw: Any, relearn: RelearnSpec | None) -> EvalSpec:
    table = check.table(raw, "eval")
    check.keys(table, "eval", ("every", "metrics", "retain_items"))
    every = check.integer(table, "every", "eval.every", default=10, low=1)
    retain_items = (check.integer(table, "retain_items", "eval.retain_items", low=2)
                    if "retain_items" in table else None)
    default = DEFAULT_RUN_METRICS + (("relearn_es",) if relearn else ())
    metrics = table.get("metrics", list(default))
    if not isinstance(metrics, list) or not metrics:
        check.fail("eval.metrics", f"must be a non-empty list of metric names, got {metrics!r}")
    for i, name in enumerate(metrics):
        facts = metric(name) if isinstance(name, str) else None
        if facts is None or not facts.run:
            check.fail(f"eval.metrics[{i}]", f"unknown metric {name!r} (known: "
                       f"{', '.join(RUN_METRICS)}){suggest(name, RUN_METRICS)}")
        if name in metrics[:i]:
            check.fail(f"eval.metrics[{i}]", f"duplicate metric {name!r}")
        if facts.needs_relearn and relearn is None:
            check.fail(f"eval.metrics[{i}]", f"{name!r} needs a [relearn] table")
        if RELEARN_STRENGTH_METRIC.fullmatch(name) and name not in relearn.metric_names():
            check.fail(f"eval.metrics[{i}]", f"{name!r} names no attack of relearn.strengths "
                       f"(its metrics: {', '.join(relearn.metric_names()) or 'none'})")
    return EvalSpec(every=every, metrics=tuple(metrics), retain_items=retain_items)


def _parse_relearn(check: Checker, raw: Any) -> RelearnSpec:
    table = check.table(raw, "relearn")
    check.keys(table, "relearn", ("steps", "lr", "fraction", "strengths", "start"))
    return RelearnSpec(
        steps=check.integer(table, "steps", "relearn.steps", default=10, low=1),
        lr=check.number(table, "lr", "relearn.lr", default=1e-3, low=0.0, low_open=True),
        fraction=check.number(table, "fraction", "relearn.fraction", default=0.5, low=0.0,
                              high=1.0, low_open=True, high_open=True),
        strengths=_parse_strengths(check, table.get("strengths", [])),
        start=check.choice(table, "start", "relearn.start", RELEARN_STARTS, default="final"),
    )


def _parse_strengths(check: Checker, raw: Any) -> tuple[tuple[int, float], ...]:
    """``[[steps, lr], ...]``: each a positive integer and a positive number, no duplicates."""
    example = "e.g. strengths = [[5, 1e-3], [20, 1e-3], [20, 1e-2]]"
    if not isinstance(raw, list):
        check.fail("relearn.strengths", f"must be a list of [steps, lr] pairs ({example}), got {raw!r}")
    out: list[tuple[int, float]] = []
    for i, pair in enumerate(raw):
        path = f"relearn.strengths[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            check.fail(path, f"must be a pair [steps, lr] ({example}), got {pair!r}")
        steps, lr = pair
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            check.fail(path, f"steps must be an integer >= 1, got {steps!r}")
        if isinstance(lr, bool) or not is_number(lr) or not lr > 0:
            check.fail(path, f"lr must be a number > 0, got {lr!r}")
        name = relearn_metric_name(steps, lr)
        if name in (relearn_metric_name(*p) for p in out):
            check.fail(path, f"duplicate strength {pair!r} (metric {name})")
        out.append((int(steps), float(lr)))
    return tuple(out)


def _parse_execution(check: Checker, raw: Any) -> ExecutionSpec:
    table = check.table(raw, "execution")
    check.keys(table, "execution", ("gpus_per_run",))
    return ExecutionSpec(gpus_per_run=check.number(table, "gpus_per_run", "execution.gpus_per_run",
                                                   default=0.0, low=0.0))


def _parse_localization(check: Checker, raw: Any, methods: Mapping) -> dict:
    table = check.table(raw, "localization")
    out = {}
    for method in table:
        path = f"localization.{method}"
        if method not in methods:
            check.fail(path, f"unknown attribution method {method!r} (known: "
                       f"{', '.join(sorted(methods))}){suggest(method, methods)}")
        defaults = methods[method]
        given = check.free_table(table, method, path)
        if defaults is not None:
            check.keys(given, path, tuple(defaults))
        out[method] = {**(defaults or {}), **given}
    return out
