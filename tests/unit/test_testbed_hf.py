"""Any HF causal LM as a testbed (kind ``hf``), in any dtype, on any device.

The model directory is written by the test: a tiny LLaMA trained on the generated authors
(so that ES values are far from 0 and 1) saved with ``save_pretrained`` next to its
word-level tokenizer. Nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from causalloc.cli import main
from causalloc.data.collate import collate, encode_items, pad_id
from causalloc.data.generator import generated_splits
from causalloc.devices import resolve_device
from causalloc.errors import MaskError, SpecError
from causalloc.masks import uniform_random
from causalloc.models.loading import build_tiny_model, train_word_tokenizer
from causalloc.models.units import adapter_for
from causalloc.runs import worker
from causalloc.testbed import (
    build_testbed,
    config_for,
    enable_gradient_checkpointing,
    finetune_all,
    inject,
)
from causalloc.unlearn.trainer import MaskedColumns, TrainConfig, train_masked
from tests.conftest import random_examples, tiny_llama
from tests.runs_helpers import BASE, parse

#: the generated data of the model directory and of every testbed built from it
DATA = {"n_authors": 6, "n_forget_authors": 2, "n_questions": 6}
#: testbed builder settings for the pretrained tiny model: a short retain fine-tuning and
#: injection (the model already knows every author)
BUILD = {"retain_epochs": 1, "retain_lr": 1e-3, "inject_steps": 10, "inject_lr": 1e-2}
#: tolerance on ES between a bfloat16 and a float32 design: per run (final ES and ES at every
#: evaluated step) and on the mean over runs of the final ES. Measured on this machine for
#: this design (2 seeds x oracle, random): per run at most 0.069 (FS) and 0.036 (RS), mean
#: 0.017; 0.037 at step 0 (theta_o built in bf16 vs float32). One forget item weighs 1/12
#: and one retain item 1/24 of a mean ES. Over 8 seeds of the same design: final ES at most
#: 0.11 apart per run (docs/models.md).
ES_TOLERANCE = 0.15
MEAN_ES_TOLERANCE = 0.05
#: at intermediate steps, where unlearning moves fastest, items flip a step earlier or later:
#: with the norm-matched injection (the default) and the utility sets, one evaluated step of
#: this design differs by 0.244 in FS (3 of 12 forget items), while the final ES stays
#: within ES_TOLERANCE
STEP_ES_TOLERANCE = 0.3
#: the unlearning of the design: strong enough to move ES_forget from 0.91 to about 0.5
ALGORITHM = {"name": '"ga"', "steps": 8, "lr": 0.1}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny LLaMA that knows the generated authors, saved with its tokenizer."""
    splits = generated_splits(DATA["n_authors"], DATA["n_forget_authors"], DATA["n_questions"], 0)
    texts = [
        t
        for it in splits.forget + splits.retain
        for t in (it.question, it.answer, it.paraphrased_answer, *it.perturbed_answers)
        if t
    ]
    tokenizer = train_word_tokenizer(texts + list(splits.refusals))
    model = build_tiny_model(
        "llama",
        len(tokenizer),
        seed=0,
        hidden=32,
        intermediate=64,
        layers=2,
        heads=4,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    finetune_all(
        model,
        encode_items(tokenizer, splits.forget + splits.retain, 64),
        pad_id(tokenizer),
        epochs=30,
        lr=1e-2,
        batch_size=8,
        seed=0,
    )
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SPEC = """
seeds = [0, 1]
budgets = [0.1]

[testbed]
kind = "hf"
model = "{model}"
dtype = "{dtype}"
device = "auto"
n_authors = {n_authors}
n_forget_authors = {n_forget_authors}
n_questions = {n_questions}
batch_size = 4
max_length = 64

[testbed.build]
{build}

[[conditions]]
strategy = "oracle"

[[conditions]]
strategy = "random"

[[algorithms]]
{algorithm}
batch_size = 4

[relearn]
steps = 2

[eval]
every = 2
metrics = ["es_forget_final", "es_retain_final", "aues", "log_forget_quality", "relearn_es"]
"""


def run_design(tmp_path, model_dir, dtype: str) -> pd.DataFrame:
    spec = tmp_path / f"{dtype}.toml"
    build, algorithm = (
        "\n".join(f"{key} = {value}" for key, value in table.items())
        for table in (BUILD, ALGORITHM)
    )
    spec.write_text(
        SPEC.format(model=model_dir, dtype=dtype, build=build, algorithm=algorithm, **DATA)
    )
    out = tmp_path / f"runs-{dtype}"
    assert main(["run", str(spec), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    return (
        pd.read_csv(out / "runs.csv").sort_values(["seed", "condition", "mask_draw"]).reset_index()
    )


def test_bfloat16_design_holds_masks_exactly_and_matches_float32_es(
    tmp_path, model_dir, monkeypatch
):
    monkeypatch.setenv("CAUSALLOC_CACHE", str(tmp_path / "cache"))
    bf16 = run_design(tmp_path, model_dir, "bfloat16")
    fp32 = run_design(tmp_path, model_dir, "float32")
    assert len(bf16) == len(fp32) == 4 and (bf16.status == "done").all()
    assert (bf16.max_abs_change_outside_mask == 0.0).all()
    assert (fp32.max_abs_change_outside_mask == 0.0).all()
    assert bf16.model.unique().tolist() == ["tiny-llama"]
    for column in ("es_forget_final", "es_retain_final"):
        difference = np.abs(bf16[column] - fp32[column])
        assert difference.max() <= ES_TOLERANCE and difference.mean() <= MEAN_ES_TOLERANCE, column
    assert fp32.es_forget_final.max() < 0.8  # unlearning moved ES (from 0.91 at step 0)
    for low, full in zip(bf16.trajectory, fp32.trajectory):
        for a, b in zip(json.loads(low), json.loads(full), strict=True):
            assert abs(a["rs"] - b["rs"]) <= STEP_ES_TOLERANCE
            assert abs(a["fs"] - b["fs"]) <= STEP_ES_TOLERANCE
    # the design's bf16 testbed (found in the cache, not rebuilt) is bf16 through and through
    built = sorted(
        path.name for path in (tmp_path / "cache" / "testbeds").iterdir() if path.is_dir()
    )
    config = worker.testbed_config(
        {
            "kind": "hf",
            "model": str(model_dir),
            "dtype": "bfloat16",
            "device": "auto",
            "batch_size": 4,
            "max_length": 64,
            "budget": 0.1,
            "seed": 0,
            **DATA,
            "build": BUILD,
        }
    )
    assert (config.retain_batch, config.inject_batch) == (4, 4)
    overridden = worker.testbed_config({"kind": "tiny", "batch_size": 4, "build": {"retain_batch": 8}})
    assert (overridden.retain_batch, overridden.inject_batch) == (8, 4)
    testbed = build_testbed(config)
    assert testbed.path.name in built
    assert (
        testbed.diagnostics["dtype"] == "bfloat16" and testbed.diagnostics["build_device"] == "cpu"
    )
    assert testbed.diagnostics["inject_max_abs_change_outside_mask"] == 0.0
    assert {p.dtype for p in testbed.load_model().parameters()} == {torch.bfloat16}


def test_unknown_architecture_names_the_model_class_and_what_is_missing(
    tmp_path, model_dir, capsys
):
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    opt = OPTForCausalLM(
        OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    )
    opt.save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    code = main(
        [
            "testbed",
            "build",
            "--kind",
            "hf",
            "--model",
            str(tmp_path / "opt"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
        ]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert "OPTForCausalLM (model_type 'opt') has no value-vector adapter" in error
    assert "MLP output projection" in error and "'gpt_neox'" in error
    # a known family whose layers lack the MLP output projection the adapter looks for
    llama = tiny_llama()
    del llama.model.layers[0].mlp.down_proj
    with pytest.raises(
        MaskError,
        match=r"LlamaForCausalLM \(model_type 'llama'\): the llama adapter "
        r"looked for the MLP output projection .* at model\.layers\[i\]\.mlp\.down_proj, "
        r"but LlamaDecoderLayer has no 'mlp\.down_proj'",
    ):
        adapter_for(llama)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"kind": "hf", "model": "org/model", "dtype": "fp16"},
            "testbed.dtype: unknown value 'fp16' (known: float32, bfloat16, float16)",
        ),
        (
            {"device": "gpu"},
            "testbed.device: unknown device 'gpu' (known forms: auto, cpu, cuda, cuda:N)",
        ),
        ({"device": "cuda:first"}, "testbed.device: unknown device 'cuda:first'"),
        ({"kind": "hf"}, "testbed.model: required when kind = 'hf'"),
        ({"model": "org/model"}, "testbed.model: only for kind = 'hf' (kind is 'tiny')"),
        (
            {"kind": "hf", "model": "./no/such/dir"},
            "testbed.model: './no/such/dir' is neither a model directory",
        ),
        ({"batch_size": 0}, "testbed.batch_size: must be >= 1, got 0"),
        ({"grad_accum": 1.5}, "testbed.grad_accum: must be an integer"),
        (
            {"gradient_checkpointing": "yes"},
            "testbed.gradient_checkpointing: must be true or false",
        ),
    ],
)
def test_spec_testbed_keys_are_validated_by_name(changes, message):
    with pytest.raises(SpecError) as info:
        parse({**BASE, "testbed": {"kind": "tiny", **changes}})
    assert str(info.value).startswith(message.split(": ")[0] + ": ") and message in str(info.value)


def test_spec_model_is_a_hub_id_or_an_absolute_directory(tmp_path, model_dir):
    hub = parse(
        {
            **BASE,
            "testbed": {
                "kind": "hf",
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "dtype": "bfloat16",
                "device": "cuda:1",
                "grad_accum": 4,
                "gradient_checkpointing": True,
            },
        }
    ).testbed
    assert hub.model_label == "meta-llama/Llama-3.1-8B-Instruct"
    assert hub.to_dict()["dtype"] == "bfloat16" and hub.to_dict()["device"] == "cuda:1"
    relative = parse(
        {**BASE, "testbed": {"kind": "hf", "model": model_dir.name}}, base_dir=model_dir.parent
    ).testbed
    assert relative.model == str(model_dir.resolve()) and relative.model_label == "tiny-llama"
    assert "dtype" not in parse(BASE).testbed.to_dict()  # unset keys leave run ids as they were


def test_testbed_config_checks_and_hashes_the_new_fields():
    with pytest.raises(SpecError, match="testbed.model: required for kind 'hf'"):
        config_for("hf")
    with pytest.raises(SpecError, match="testbed.dtype: unknown dtype 'half'"):
        config_for("tiny", dtype="half")
    with pytest.raises(SpecError, match="testbed.device: unknown device 'gpu'"):
        config_for("tiny", device="gpu")
    with pytest.raises(SpecError, match="testbed.grad_accum: must be an integer >= 1"):
        config_for("tiny", grad_accum=0)
    base = config_for("tiny").hash()
    assert base == config_for("tiny", device="cuda:0", gradient_checkpointing=True).hash()
    assert (
        base
        != config_for("tiny", dtype="bfloat16").hash()
        != config_for("tiny", grad_accum=2).hash()
    )


def test_auto_device_is_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(SpecError, match="device: 'cuda:0' requested but CUDA is not available"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cli_builds_an_hf_testbed_in_bfloat16(tmp_path, model_dir, capsys):
    common = [
        "testbed",
        "build",
        "--kind",
        "hf",
        "--model",
        str(model_dir),
        "--data",
        "generated",
        "--authors",
        "6",
        "--forget-authors",
        "2",
        "--set",
        "n_questions=6",
        "--set",
        "retain_epochs=0",
        "--set",
        "inject_steps=2",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--gradient-checkpointing",
        "--cache-dir",
        str(tmp_path),
    ]
    assert main([*common, "--dtype", "bfloat16", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["dtype"] == "bfloat16" and report["build_device"] == "cpu" and report["kind"] == "hf"
    )
    assert report["model"] == str(model_dir) and report["inject_max_abs_change_outside_mask"] == 0.0
    assert main([*common, "--data", "tofu"]) == 2
    assert "--data tofu: needs --tofu-path" in capsys.readouterr().err


@pytest.mark.parametrize("checkpointing", [False, True])
def test_injection_accumulates_micro_batches_and_checkpoints_layers(checkpointing):
    """2 steps x 2 micro-batches x (forget, retain) forwards; checkpointing reruns every
    layer's forward in the backward pass, and changes nothing but memory and time."""
    model = tiny_llama()
    if checkpointing:
        enable_gradient_checkpointing(model)
    examples = random_examples(8)
    mask = uniform_random(adapter_for(model).signature, 0.25, np.random.default_rng(0))
    config = config_for(
        "hf",
        model="unused",
        inject_steps=2,
        inject_batch=2,
        grad_accum=2,
        gradient_checkpointing=checkpointing,
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    calls = []
    # the unit's first MLP projection: checkpointing's recomputation (which stops early once
    # every saved tensor is back) always runs it again, whatever the injection trains
    hook = adapter_for(model).mlp_modules[0].gate_proj.register_forward_hook(lambda *_: calls.append(1))
    check = inject(model, mask, examples, examples, 0, config)
    hook.remove()
    assert len(calls) == 2 * 2 * 2 * (2 if checkpointing else 1)
    assert check["inject_max_abs_change_outside_mask"] == 0.0
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(part in name for name in changed for part in ("mlp.",))
    assert {name.rsplit(".", 2)[-2] for name in changed} <= {"down_proj", "gate_proj", "up_proj"}
    reference = tiny_llama()
    inject(
        reference,
        mask,
        examples,
        examples,
        0,
        config_for("hf", model="unused", inject_steps=2, inject_batch=2, grad_accum=2),
    )
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_masked_columns_of_a_bfloat16_model_are_float32_master_weights():
    """Steps far below bf16 resolution still move the columns; step 0 adds exactly 0."""
    model = tiny_llama().to(torch.bfloat16)
    mask = uniform_random(adapter_for(model).signature, 0.25, np.random.default_rng(0))
    batch = collate(random_examples(4), 0)
    with torch.no_grad():
        start = model(**batch).logits
    with MaskedColumns(model, mask) as columns:
        assert {c.dtype for c in columns.columns} == {torch.float32}
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, start)
        result = train_masked(
            model,
            columns,
            lambda step, _: model(**batch).loss,
            TrainConfig(steps=3, lr=1e-6, optimizer="sgd", momentum=0.0, grad_clip=None),
        )
    # an SGD step of lr * grad (< 1e-6) is below half a bf16 ulp of the weights (~1e-3): a
    # bf16 column would not move at all
    assert 0.0 < result.max_abs_change_inside_mask < 1e-5
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_help_lists_the_model_flags_and_spec_keys(capsys):
    for command in (["testbed", "build", "--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
    text = capsys.readouterr().out
    for flag in (
        "--model ID_OR_DIR",
        "--data",
        "--dtype",
        "--device",
        "--batch-size",
        "--grad-accum",
        "--gradient-checkpointing",
        "--max-length",
        "--kind hf --model meta-llama/",
    ):
        assert flag in text, flag
    for key in (
        'kind = "hf"',
        'dtype = "bfloat16"',
        'device = "auto"',
        "gradient_checkpointing = true",
    ):
        assert key in text, key


def test_a_hub_id_goes_through_from_pretrained_and_fails_clearly_offline(monkeypatch, model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    from causalloc.errors import DataError
    from causalloc.models.loading import load_pretrained

    asked = []

    def offline(name, *args, **kwargs):
        asked.append(name)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    with pytest.raises(DataError, match=r"org/model: cannot read a model config \(a hub id: needs "
                       r"the network or the HF cache\): We couldn't connect"):
        load_pretrained("org/model")
    assert asked == ["org/model"]
    with pytest.raises(DataError, match=r"\./no/such/dir: model directory does not exist"):
        load_pretrained("./no/such/dir")
    monkeypatch.undo()
    from transformers import LlamaForCausalLM

    config, loaded = AutoConfig.from_pretrained(model_dir), []
    monkeypatch.setattr(AutoConfig, "from_pretrained", lambda name: config)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda name, dtype: (
        loaded.append((name, dtype)) or LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype)))
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda name: name)
    model, tokenizer = load_pretrained("org/model", torch.bfloat16)
    assert loaded == [("org/model", torch.bfloat16)] and tokenizer == "org/model"
    assert next(model.parameters()).dtype == torch.bfloat16
