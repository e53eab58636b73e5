"""The controlled injection testbed (Lee et al. 2025, EMNLP; methods.md "Controlled injection").

theta_p (pretrained; for the tiny kind a random init) -> theta_r: fine-tune all
parameters on the retain split, so theta_r never saw the forget authors -> theta_o:
train theta_r on the forget split updating ONLY a uniformly random set V_tgt of value
vectors (budget p, default 10%), with the hard-constrained masked trainer. V_tgt is then
the ground-truth location of the forget knowledge, and every matched run starts from the
same theta_o.

Injection mixes retain batches into the restricted training (loss = NLL(forget) +
NLL(retain)): forget-only injection into 10% of value vectors destroys the retain
knowledge (a prototype fell from ES_retain 0.92 to 0.06), which would make theta_o a bad
starting point for unlearning. The mix keeps ES_retain(theta_o) near ES_retain(theta_r).
theta_r is also fine-tuned on the model-utility sets (:func:`retain_training_items`); the
injection mix keeps the retain split only (mixing the utility sets in too kept more of
theta_r's utility, 0.883 vs 0.845 on the quick demo's testbed, but cost forget knowledge on
small testbeds: ES_forget(theta_o) fell from >= 0.9 to 0.76 on a 6-author test fixture), so
theta_o's utility may sit below theta_r's; MU95 is relative to theta_o.

Injection is norm-matched by default (``injection = "norm_matched"``): it trains the whole
V_tgt units (each unit's value vector and its two key rows, gate and up) and after every
optimizer step rescales each trained vector to its theta_r L2 norm (projected gradient
descent onto the sphere of the starting norm). Unconstrained injection (``"free"``, the old
behaviour: value vectors only, no projection) grew the V_tgt value vectors of the default tiny
testbed about 11x, so ranking units by column norm alone found V_tgt with precision 1.0 and
"oracle vs random" compared large columns with small ones. Projection was chosen over a norm
penalty because it holds every norm exactly (no penalty weight to tune, no drift a longer
injection could amplify) and leaves the direction free, which is what a fine-tune changes.
Since V_tgt is a uniform random draw and the norms are theta_r's, ranking by norm is as good
as chance. The diagnostics ``norm_ratio_vtgt`` and ``weight_norm_precision`` of every testbed
measure this.

The testbed is cached on disk under the sha256 of its resolved config, built in a
temporary folder and renamed into place when complete, so an interrupted build never
leaves a half-written testbed that a later run would reuse. Beside the models it records
(``item_es.json``) theta_o's and theta_r's ES on every forget and retain item, from the pass
that gives its ES diagnostics: every run's step-0 scores and theta_r's scores (the forget
target) are read from it instead of computed again by each worker.

Kind ``hf`` starts from any HF causal LM (a hub id or a local directory, with its own
tokenizer) whose architecture has a value-vector adapter (:mod:`causalloc.models.units`).
Every kind is built, saved and loaded in its ``dtype`` on its ``device`` (``auto``: CUDA
when present): theta_r's full fine-tuning runs in the model dtype (AdamW on bf16 weights
when ``dtype = "bfloat16"``), the injection trains float32 master columns
(:class:`~causalloc.unlearn.trainer.MaskedColumns`) rounded to the model dtype when merged.
``batch_size`` (micro-batch) x ``grad_accum`` examples make one optimizer step of both, and
``gradient_checkpointing`` trades compute for activation memory. ``device`` and
``gradient_checkpointing`` say how a testbed is computed, not what it is: they are not
part of its hash, so a testbed built on a GPU is reused on a CPU and vice versa.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from causalloc.data.collate import encode_items, eval_batches, length_sorted_batches, pad_id
from causalloc.data.tofu import WORLD_SETS
from causalloc.data.types import QAItem, QASplits
from causalloc.devices import check_device, check_dtype, resolve_device, torch_dtype
from causalloc.errors import DataError, SpecError
from causalloc.masks import Mask, top_k_mask, uniform_random
from causalloc.metrics import extraction_strength, extraction_strength_per_item
from causalloc.models.units import adapter_for
from causalloc.models.weights import weights_fingerprint
from causalloc.unlearn.trainer import (
    BatchStream,
    MaskedColumns,
    ParameterSnapshot,
    TrainConfig,
    max_abs_change_outside_mask,
    to_device,
    train_masked,
)
from causalloc.utility import UTILITY_SPLITS, model_utility

KINDS = ("tiny", "tofu", "smollm2", "hf")
INJECTIONS = ("norm_matched", "free")
#: default injection learning rate per injection mode (Adam)
INJECT_LR = {"norm_matched": 3e-3, "free": 3e-2}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TestbedConfig:
    """Everything that determines a testbed; its hash names the cache folder.

    ``kind``: ``tiny`` (generated authors, tiny LLaMA with a word-level tokenizer),
    ``tofu`` (a TOFU subset from ``tofu_path``, tiny LLaMA), ``smollm2``
    (SmolLM2-135M-Instruct as theta_p), ``hf`` (``model``, a hub id or a local directory,
    as theta_p); the last two take TOFU data when ``tofu_path`` is set, else generated. Defaults
    are the tiny kind's, tuned so that ES_forget(theta_r) <= 0.2, ES_forget(theta_o) >= 0.9
    and ES_retain(theta_o) >= 0.95 ES_retain(theta_r); :func:`config_for` gives each kind's
    defaults.
    """

    __test__ = False  # not a pytest class

    kind: str = "tiny"
    # data
    n_authors: int = 20
    n_forget_authors: int = 2
    n_questions: int = 20
    data_seed: int = 0
    tofu_path: str | None = None
    max_length: int = 64
    # tiny model (ignored for smollm2)
    hidden: int = 128
    intermediate: int = 1024
    layers: int = 4
    heads: int = 4
    model_seed: int = 0
    # theta_p -> theta_r: full fine-tuning on retain
    retain_epochs: int = 30
    retain_lr: float = 3e-3
    retain_batch: int = 16
    # theta_r -> theta_o: injection into V_tgt only
    budget: float = 0.1
    target_seed: int = 0
    inject_steps: int = 600
    inject_lr: float | None = None  # None: the injection's default (INJECT_LR)
    inject_batch: int = 16
    # model, precision, placement and memory (see the module docstring)
    model: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    # TOFU model utility: items per utility set (retain subset, real authors, world facts)
    utility_items: int = 40
    injection: str = "norm_matched"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"testbed.kind: unknown {self.kind!r} (known: {list(KINDS)})")
        if self.kind == "tofu" and not self.tofu_path:
            raise SpecError("testbed.tofu_path: required for kind 'tofu'")
        if self.kind == "hf" and not self.model:
            raise SpecError("testbed.model: required for kind 'hf' (a hub id or a model directory)")
        if self.kind == "tiny" and self.tofu_path:
            raise SpecError("testbed.tofu_path: kind 'tiny' trains on generated authors; for TOFU data "
                            "use kind 'tofu' (the tiny model), 'smollm2' or 'hf'")
        if self.kind != "hf" and self.model:
            raise SpecError(f"testbed.model: only for kind 'hf', not {self.kind!r}")
        check_dtype(self.dtype, "testbed.dtype")
        check_device(self.device, "testbed.device")
        for key in ("retain_batch", "inject_batch", "grad_accum", "max_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"testbed.{key}: must be an integer >= 1, got {value!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise SpecError(f"testbed.gradient_checkpointing: must be true or false, got "
                            f"{self.gradient_checkpointing!r}")
        if self.injection not in INJECTIONS:
            raise SpecError(f"testbed.injection: unknown {self.injection!r} (known: {list(INJECTIONS)})")
        if self.inject_lr is None:  # resolved, so that the hash names the rate actually used
            object.__setattr__(self, "inject_lr", INJECT_LR[self.injection])
        if not 0 < self.n_forget_authors < self.n_authors:
            raise SpecError(
                f"testbed.n_forget_authors: must lie in [1, n_authors - 1], got {self.n_forget_authors}"
            )
        if self.utility_items < 1:
            raise SpecError(f"testbed.utility_items: must be >= 1, got {self.utility_items}")

    def hash(self) -> str:
        """sha256 of what the testbed is: every field except those in ``_NOT_HASHED``."""
        payload = {"format": FORMAT_VERSION,
                   **{key: value for key, value in asdict(self).items() if key not in _NOT_HASHED}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


#: how a testbed is computed, not what it is: not hashed
_NOT_HASHED = ("device", "gradient_checkpointing")

#: defaults of the kinds that start from a pretrained model
_PRETRAINED_DEFAULTS = {"retain_epochs": 3, "retain_lr": 5e-5, "retain_batch": 8,
                        "inject_steps": 150, "inject_lr": 2e-3, "inject_batch": 8, "max_length": 96}
#: per-kind defaults that differ from the dataclass defaults (the tiny kind's)
KIND_DEFAULTS = {
    "tiny": {},
    "tofu": {},
    # theta_r must know its retain set, or RS means little: 3 epochs at 5e-5 left SmolLM2 at
    # ES_retain 0.33 on 18 generated authors (issue 14), so it trains longer at a higher rate:
    # 10 epochs at 1e-4 reached 0.968 on 6 TOFU retain authors (analyses/smollm2_oracle_vs_random.toml)
    "smollm2": {**_PRETRAINED_DEFAULTS, "retain_epochs": 10, "retain_lr": 1e-4},
    "hf": _PRETRAINED_DEFAULTS,
}


def config_for(kind: str = "tiny", **overrides) -> TestbedConfig:
    """A testbed config with the kind's defaults and the given overrides (unknown keys raise)."""
    known = {f.name for f in fields(TestbedConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpecError(f"testbed: unknown key(s) {unknown} (known: {sorted(known)})")
    if kind not in KINDS:
        raise SpecError(f"testbed.kind: unknown {kind!r} (known: {list(KINDS)})")
    return TestbedConfig(kind=kind, **{**KIND_DEFAULTS[kind], **overrides})


def default_cache_dir() -> Path:
    """``$CAUSALLOC_CACHE/testbeds`` or ``~/.cache/causalloc/testbeds``."""
    root = os.environ.get("CAUSALLOC_CACHE") or Path.home() / ".cache" / "causalloc"
    return Path(root) / "testbeds"


@dataclass
class Testbed:
    """A built testbed on disk: data, tokenizer, theta_r, theta_o and the true region V_tgt."""

    __test__ = False

    config: TestbedConfig
    path: Path
    splits: QASplits
    v_tgt: Mask
    diagnostics: dict = field(default_factory=dict)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path / "tokenizer")

    def load_model(self, which: str = "theta_o", device: str | torch.device | None = None,
                   dtype: str | None = None):
        """Load ``theta_o`` (default) or ``theta_r`` frozen, in eval mode, on ``device`` in
        ``dtype`` (default: the config's ``device`` and ``dtype``)."""
        from transformers import AutoModelForCausalLM

        _quiet_transformers()
        if which not in ("theta_o", "theta_r"):
            raise SpecError(f"testbed model: unknown {which!r} (theta_o or theta_r)")
        if device is None or isinstance(device, str):
            device = resolve_device(device or self.config.device)
        model = AutoModelForCausalLM.from_pretrained(
            self.path / which, dtype=torch_dtype(dtype or self.config.dtype))
        return model.to(device).eval().requires_grad_(False)

    def recorded_item_es(self) -> dict | None:
        """theta_o's and theta_r's ES on every item as the build computed them, one pass over
        the forget then the retain items (``length_sorted_batches``, batches of 64): keys
        ``theta_o``, ``theta_r`` (lists, forget items first), ``n_forget``, and what the values
        hold for: ``max_length``, ``dtype``, ``device`` (its type). Runs take their step-0
        scores and theta_r's from it instead of computing them again. None for a testbed built
        before the record existed."""
        path = self.path / ITEM_ES_FILE
        if not path.exists():
            return None
        rebuild = "delete the testbed folder to rebuild it"
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: damaged record (not JSON: {exc}); {rebuild}") from None
        missing = sorted({"max_length", "dtype", "device", "n_forget", "theta_o", "theta_r"} - set(record))
        if missing:
            raise DataError(f"{path}: damaged record (lacks {missing}); {rebuild}")
        expected = len(self.splits.forget) + len(self.splits.retain)
        if record["n_forget"] != len(self.splits.forget) or any(
                len(record[which]) != expected for which in ("theta_o", "theta_r")):
            raise DataError(f"{path}: damaged record (expected n_forget {len(self.splits.forget)} and "
                            f"{expected} ES values per model, one per forget and retain item); {rebuild}")
        return record

    @property
    def theta_o_fingerprint(self) -> str:
        """sha256 of theta_o's weights (:func:`~causalloc.models.weights.weights_fingerprint`),
        computed when the testbed is built and kept in its record (testbed.json); a testbed
        built before the record had it gets it computed once and added."""
        meta_file = self.path / "testbed.json"
        meta = json.loads(meta_file.read_text())
        if "theta_o_fingerprint" not in meta:
            meta["theta_o_fingerprint"] = weights_fingerprint(self.path / "theta_o")
            partial = meta_file.with_name(f".testbed.json.{os.getpid()}")
            partial.write_text(json.dumps(meta, indent=2))
            os.replace(partial, meta_file)
        return meta["theta_o_fingerprint"]


# data ---------------------------------------------------------------------------------
def load_splits(config: TestbedConfig) -> QASplits:
    """The testbed's data: generated authors, or a TOFU subset of ``n_authors`` authors.

    ``extra`` holds the model-utility sets (:data:`causalloc.utility.UTILITY_SPLITS`) of
    ``utility_items`` items each: for TOFU a seeded subset (``numpy.random.default_rng([data_seed,
    1])``) of retain_perturbed.json (rows of the kept retain authors), real_authors and
    world_facts; for generated data the generator's analogues
    (:func:`causalloc.data.generator.utility_sets`).
    """
    from causalloc.data.generator import generated_splits, seeded_subset

    if config.tofu_path:  # kinds tofu, smollm2 and hf (tiny refuses a TOFU path)
        from causalloc.data.tofu import load_tofu

        splits = load_tofu(config.tofu_path, authors=config.n_authors, n_forget_authors=config.n_forget_authors)
        rng = np.random.default_rng([config.data_seed, 1])
        for name in UTILITY_SPLITS:
            splits.extra[name] = seeded_subset(splits.extra[name], config.utility_items, rng)
        return splits
    return generated_splits(config.n_authors, config.n_forget_authors, config.n_questions, config.data_seed,
                            n_utility=config.utility_items)


def retain_training_items(splits: QASplits) -> list[QAItem]:
    """What theta_r is fine-tuned on: the retain split and the world-knowledge utility sets
    (real authors, world facts), which a tiny model cannot know from pretraining and which
    unlearning should keep (the retain utility subset is part of the retain split already)."""
    return splits.retain + [item for name in WORLD_SETS for item in splits.extra.get(name, [])]


def _splits_to_json(splits: QASplits) -> dict:
    def items(xs):
        return [asdict(x) for x in xs]

    return {"forget": items(splits.forget), "retain": items(splits.retain), "holdout": items(splits.holdout),
            "refusals": list(splits.refusals), "extra": {k: items(v) for k, v in splits.extra.items()},
            "source": splits.source}


def _splits_from_json(data: dict, source: str) -> QASplits:
    def items(xs):
        return [QAItem(**{**x, "perturbed_answers": tuple(x.get("perturbed_answers", ()))}) for x in xs]

    return QASplits(items(data["forget"]), items(data["retain"]), items(data["holdout"]), data["refusals"],
                    {k: items(v) for k, v in data["extra"].items()}, source)


# models -------------------------------------------------------------------------------
def _quiet_transformers() -> None:
    """No per-file progress bars from transformers' save/load (they drown our own)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _initial_model_and_tokenizer(config: TestbedConfig, splits: QASplits):
    """theta_p and its tokenizer, in the config's dtype (on the CPU)."""
    from causalloc.models.loading import (
        build_tiny_llama,
        load_pretrained,
        load_smollm2,
        train_word_tokenizer,
    )

    dtype = torch_dtype(config.dtype)
    if config.kind == "smollm2":
        return load_smollm2(dtype)
    if config.kind == "hf":
        return load_pretrained(config.model, dtype)
    extra = [it for items in splits.extra.values() for it in items]
    texts = [t for it in splits.forget + splits.retain + splits.holdout + extra
             for t in (it.question, it.answer, it.paraphrased_answer, *it.perturbed_answers) if t]
    tokenizer = train_word_tokenizer(texts + list(splits.refusals))
    model = build_tiny_llama(tokenizer, hidden=config.hidden, intermediate=config.intermediate,
                             layers=config.layers, heads=config.heads, seed=config.model_seed)
    return model.to(dtype), tokenizer


def enable_gradient_checkpointing(model) -> None:
    """HF activation checkpointing, non-reentrant: gradients reach the masked columns'
    hooks inside checkpointed layers although the layer weights are frozen."""
    enable = (getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5
              or model.gradient_checkpointing_enable)
    enable({"use_reentrant": False})


def _checkpointing_active(model) -> None:
    """HF checkpoints a layer only in training mode: switch on the training flag of exactly
    the checkpointing modules, not of their children, so that dropout stays off."""
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            module.training = True


def optimizer_steps(n_examples: int, epochs: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps of ``epochs`` passes in steps of ``batch_size * grad_accum`` examples."""
    return epochs * max(1, n_examples // (batch_size * grad_accum))


def finetune_all(model, examples, pad_token_id: int, epochs: int, lr: float, batch_size: int, seed: int,
                 progress=None, grad_accum: int = 1) -> list[float]:
    """Plain full-parameter fine-tuning with AdamW (theta_p -> theta_r), seeded data order;
    each step averages the gradients of ``grad_accum`` micro-batches of ``batch_size``."""
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = optimizer_steps(len(examples), epochs, batch_size, grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 20)))
    stream = iter(BatchStream([examples], batch_size, pad_token_id, seed))
    device = next(model.parameters()).device
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(grad_accum):
            (batch,) = next(stream)
            loss = model(**to_device(batch, device)).loss / grad_accum
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(total)
        if progress is not None:
            progress.update(1)
    model.eval().requires_grad_(False)
    return losses


def inject(model, v_tgt: Mask, forget, retain, pad_token_id: int, config: TestbedConfig, progress=None) -> dict:
    """Train ``model`` on forget (+ retain) updating only the V_tgt units; write into the model.

    ``free``: only the V_tgt value vectors, with the hard-constrained masked trainer.
    ``norm_matched``: :func:`inject_units_norm_matched`. Returns the hard-constraint check
    (``inject_max_abs_change_outside_mask``, 0.0 when nothing outside V_tgt moved).
    """
    forget_stream = iter(BatchStream([forget], config.inject_batch, pad_token_id, config.target_seed))
    retain_stream = iter(BatchStream([retain], config.inject_batch, pad_token_id, config.target_seed + 1))
    device = next(model.parameters()).device

    def loss_fn(*_):
        """Mean of NLL(forget) + NLL(retain) over ``grad_accum`` micro-batches; all but the
        last are back-propagated here (the caller zeroes gradients before the call)."""
        if config.gradient_checkpointing:
            _checkpointing_active(model)
        earlier = 0.0
        for micro in range(config.grad_accum):
            (f,) = next(forget_stream)
            (r,) = next(retain_stream)
            loss = (model(**to_device(f, device)).loss
                    + model(**to_device(r, device)).loss) / config.grad_accum
            if micro < config.grad_accum - 1:
                loss.backward()
                earlier += float(loss.detach())
        if progress is not None:
            progress.update(1)
        return loss + earlier

    if config.injection == "norm_matched":
        return inject_units_norm_matched(model, v_tgt, loss_fn, config)
    snapshot = ParameterSnapshot(model)
    train_config = TrainConfig(steps=config.inject_steps, lr=config.inject_lr, optimizer="adam",
                               grad_clip=1.0, batch_size=config.inject_batch, seed=config.target_seed)
    model.requires_grad_(False)
    with MaskedColumns(model, v_tgt) as columns:
        result = train_masked(model, columns, loss_fn, train_config)
        outside = max_abs_change_outside_mask(model, snapshot, columns)
    columns.merge_into(model)
    return {"inject_max_abs_change_outside_mask": outside, "inject_final_loss": result.losses[-1]}


def unit_slices(model, v_tgt: Mask) -> list[tuple[torch.nn.Parameter, int, torch.Tensor]]:
    """``(weight, unit axis, bool mask over that axis)`` of every weight that belongs to the
    V_tgt units of a LLaMA-layout MLP: the value column (``down_proj``) and the two key rows
    (``gate_proj``, ``up_proj``) of each unit. Every testbed kind is LLaMA-layout."""
    adapter = adapter_for(model)
    if adapter.family != "llama":
        raise SpecError(f"testbed.injection: norm_matched needs a LLaMA-layout model, got {adapter.family!r}")
    dense = torch.as_tensor(v_tgt.dense())
    slices = []
    for layer in v_tgt.layers():
        mlp, chosen = adapter.mlp_modules[layer], dense[layer].to(adapter.value_weight(layer).device)
        slices += [(mlp.down_proj.weight, 1, chosen), (mlp.gate_proj.weight, 0, chosen),
                   (mlp.up_proj.weight, 0, chosen)]
    return slices


def inject_units_norm_matched(model, v_tgt: Mask, loss_fn, config: TestbedConfig) -> dict:
    """Norm-matched injection: train the V_tgt units (value column and both key rows of each),
    projecting every trained column / row back to its theta_r L2 norm after each Adam step.

    Why whole units: with the key rows frozen, a value vector's contribution ``a_i v_i`` is
    bounded by its theta_r activation times its fixed norm, and 10% of value vectors at fixed
    norm could not carry the forget set (the forget NLL plateaued at ~2.5 vs ~1.0 for free
    injection on the quick testbed, ES_forget stayed near theta_r's). Training the keys lets a
    unit fire on forget contexts, by direction alone. Everything outside the V_tgt units is
    restored from the snapshot after every step, so it cannot move (checked at the end).
    Hand-written: no library offers masked training projected onto per-row norm spheres.
    """
    snapshot = ParameterSnapshot(model)
    slices = unit_slices(model, v_tgt)
    weights = list(dict.fromkeys(w for w, _, _ in slices))
    masks = {id(w): (chosen.unsqueeze(0) if axis == 1 else chosen.unsqueeze(1)) for w, axis, chosen in slices}
    axes = {id(w): axis for w, axis, _ in slices}
    starts = {id(w): w.detach().clone() for w in weights}
    norms = {id(w): w.detach().norm(dim=1 - axes[id(w)], keepdim=True) for w in weights}
    model.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    optimizer = torch.optim.Adam(weights, lr=config.inject_lr)
    was_training, losses = model.training, []
    model.eval()
    for _ in range(config.inject_steps):
        optimizer.zero_grad(set_to_none=True)  # before: loss_fn back-propagates micro-batches
        loss = loss_fn()
        loss.backward()
        for w in weights:
            w.grad.mul_(masks[id(w)])
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        optimizer.step()
        with torch.no_grad():
            for w in weights:
                scaled = w * (norms[id(w)] / w.norm(dim=1 - axes[id(w)], keepdim=True).clamp_min(1e-12))
                w.copy_(torch.where(masks[id(w)], scaled, starts[id(w)]))
        losses.append(float(loss.detach()))
    model.train(was_training)
    model.requires_grad_(False)
    outside = _max_change_outside_units(model, snapshot, slices)
    return {"inject_max_abs_change_outside_mask": outside, "inject_final_loss": losses[-1]}


def _max_change_outside_units(model, snapshot: ParameterSnapshot, slices) -> float:
    """max |theta_o - theta_r| over every coordinate outside the V_tgt units' columns / rows."""
    names = {id(p): name for name, p in model.named_parameters()}
    exclude = {names[id(w)]: (axis, chosen.nonzero().flatten().cpu()) for w, axis, chosen in slices}
    return max(snapshot.max_abs_change(model, exclude).values(), default=0.0)


def norm_diagnostics(model, v_tgt: Mask) -> dict:
    """Whether V_tgt can be read off the weights alone, at this model (theta_o).

    ``norm_ratio_vtgt`` = mean L2 norm of the V_tgt value vectors / mean norm of all others;
    ``weight_norm_precision`` = |top-|V_tgt| units by norm  cap  V_tgt| / |V_tgt| (the
    ``weight_norm`` localizer at the testbed budget; chance = the budget fraction).
    """
    norms = adapter_for(model).value_norms().double().cpu().numpy()
    inside = v_tgt.dense()
    by_norm = top_k_mask(norms, v_tgt.size, v_tgt.signature, name="weight_norm")
    return {"norm_ratio_vtgt": float(norms[inside].mean() / norms[~inside].mean()),
            "weight_norm_precision": by_norm.overlap(v_tgt) / v_tgt.size}


def evaluate_es(model, tokenizer, splits: QASplits, max_length: int) -> dict:
    """Mean ES on the forget and retain splits (one teacher-forced pass each)."""
    pid = pad_id(tokenizer)

    def mean_es(items):
        return float(np.mean(extraction_strength(model, eval_batches(encode_items(tokenizer, items, max_length), pid))))

    return {"es_forget": mean_es(splits.forget), "es_retain": mean_es(splits.retain)}


def _mean_es(values: np.ndarray, n_forget: int) -> dict:
    """Mean ES of the forget items (the first ``n_forget``) and of the retain items."""
    return {"es_forget": float(np.mean(values[:n_forget])), "es_retain": float(np.mean(values[n_forget:]))}


# build / load -------------------------------------------------------------------------
#: the build's record of theta_o's and theta_r's ES on every item (Testbed.recorded_item_es)
ITEM_ES_FILE = "item_es.json"


def build_testbed(config: TestbedConfig | None = None, cache_dir: str | Path | None = None,
                  progress: bool = False, rebuild: bool = False) -> Testbed:
    """Build the testbed for ``config`` or reuse the cached one with the same hash (its
    config then takes the requested unhashed settings: device, gradient checkpointing)."""
    config = config or TestbedConfig()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    path = root / config.hash()[:16]
    if (path / "testbed.json").exists() and not rebuild:
        return _as_requested(load_testbed(path), config)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{path.name}.lock", "w") as lock:  # one builder at a time per testbed
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "testbed.json").exists() and not rebuild:
            return _as_requested(load_testbed(path), config)
        with _build_threads(config):
            return _build(config, root, path, progress)


def _as_requested(testbed: Testbed, config: TestbedConfig) -> Testbed:
    testbed.config = config  # same hash: differs at most in the unhashed settings
    return testbed


@contextmanager
def _build_threads(config: TestbedConfig):
    """One torch thread for the tiny model kinds: their matmuls are too small to gain from a
    second thread, and OpenMP threads on a busy machine thrash (measured here: 2.3 s per
    step with 2 threads vs 0.07 s with 1 when other processes held the cores)."""
    previous = torch.get_num_threads()
    if config.kind in ("tiny", "tofu"):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _build(config: TestbedConfig, root: Path, path: Path, progress: bool) -> Testbed:
    start = time.perf_counter()
    _quiet_transformers()
    torch.manual_seed(config.model_seed)
    device = resolve_device(config.device)
    splits = load_splits(config)
    model, tokenizer = _initial_model_and_tokenizer(config, splits)
    model.to(device)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    pid = pad_id(tokenizer)
    forget = encode_items(tokenizer, splits.forget, config.max_length)
    retain = encode_items(tokenizer, splits.retain, config.max_length)
    retain_training = encode_items(tokenizer, retain_training_items(splits), config.max_length)
    steps_r = optimizer_steps(len(retain_training), config.retain_epochs, config.retain_batch,
                              config.grad_accum)
    bar = _progress(progress, steps_r + config.inject_steps, "testbed")
    finetune_all(model, retain_training, pid, config.retain_epochs, config.retain_lr,
                 config.retain_batch, config.model_seed, bar, config.grad_accum)
    scoring = length_sorted_batches(forget + retain, pid)
    item_es = {"theta_r": extraction_strength_per_item(model, *scoring)}
    diag_r = _mean_es(item_es["theta_r"], len(forget))
    utility_r = model_utility(model, tokenizer, splits.extra, config.max_length).value
    tmp = root / f".tmp-{path.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "theta_r")
    signature = adapter_for(model).signature
    v_tgt = uniform_random(signature, config.budget, np.random.default_rng(config.target_seed), name="oracle")
    check = inject(model, v_tgt, forget, retain, pid, config, bar)
    if bar is not None:
        bar.close()
    item_es["theta_o"] = extraction_strength_per_item(model, *scoring)
    diag_o = _mean_es(item_es["theta_o"], len(forget))
    utility_o = model_utility(model, tokenizer, splits.extra, config.max_length).value
    diag_norm = norm_diagnostics(model, v_tgt)
    model.save_pretrained(tmp / "theta_o")
    tokenizer.save_pretrained(tmp / "tokenizer")
    v_tgt.save(tmp / "v_tgt.json")
    (tmp / "data.json").write_text(json.dumps(_splits_to_json(splits)))
    (tmp / ITEM_ES_FILE).write_text(json.dumps(
        {"max_length": config.max_length, "dtype": config.dtype, "device": device.type, "n_forget": len(forget),
         **{which: values.tolist() for which, values in item_es.items()}}))
    diagnostics = {
        "es_forget_theta_r": diag_r["es_forget"], "es_retain_theta_r": diag_r["es_retain"],
        "es_forget_theta_o": diag_o["es_forget"], "es_retain_theta_o": diag_o["es_retain"],
        **diag_norm, "budget": config.budget, "n_target_units": v_tgt.size, "total_units": signature.total_units,
        "n_forget": len(forget), "n_retain": len(retain), **check,
        "dtype": config.dtype, "build_device": str(device),
        "model_utility_theta_r": utility_r, "model_utility_theta_o": utility_o,
        "utility_sets": {name: len(splits.extra.get(name, [])) for name in UTILITY_SPLITS},
        "utility_source": ("TOFU retain_perturbed, real_authors_perturbed, world_facts_perturbed (seeded subsets)"
                           if splits.source.startswith("TOFU") else "generator: retain subset, classic authors, "
                           "fictitious countries (causalloc.data.generator.utility_sets)"),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (tmp / "testbed.json").write_text(json.dumps(
        {"config": asdict(config), "hash": config.hash(), "signature": signature.to_dict(),
         "diagnostics": diagnostics, "theta_o_fingerprint": weights_fingerprint(tmp / "theta_o")},
        indent=2))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return load_testbed(path)


def cached_record(config: TestbedConfig, cache_dir: str | Path | None = None) -> dict | None:
    """The cache record (``testbed.json``: config, hash, diagnostics) of ``config``'s testbed,
    or None when it is not built; reads no model."""
    meta_file = (Path(cache_dir) if cache_dir else default_cache_dir()) / config.hash()[:16] / "testbed.json"
    return json.loads(meta_file.read_text()) if meta_file.exists() else None


def load_testbed(path: str | Path) -> Testbed:
    """Load a built testbed folder (raises DataError naming the missing piece)."""
    path = Path(path)
    meta_file = path / "testbed.json"
    if not meta_file.exists():
        raise DataError(f"{path}: not a built testbed (testbed.json missing)")
    meta = json.loads(meta_file.read_text())
    # a record without the key was built before the option existed, i.e. with free injection
    config = TestbedConfig(**{"injection": "free", **meta["config"]})
    splits = _splits_from_json(json.loads((path / "data.json").read_text()), str(path / "data.json"))
    testbed = Testbed(config, path, splits, Mask.load(path / "v_tgt.json"), meta["diagnostics"])
    if "norm_ratio_vtgt" not in testbed.diagnostics:  # cached before these diagnostics existed
        testbed.diagnostics.update(norm_diagnostics(testbed.load_model("theta_o"), testbed.v_tgt))
        staged = path / f".testbed.json.{os.getpid()}"
        staged.write_text(json.dumps({**meta, "diagnostics": testbed.diagnostics}, indent=2))
        os.replace(staged, meta_file)  # atomic: a concurrent reader sees the old or the new record
    return testbed


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=None)  # None: off unless a tty


__all__ = ["Testbed", "TestbedConfig", "build_testbed", "cached_record", "config_for", "load_testbed"]
