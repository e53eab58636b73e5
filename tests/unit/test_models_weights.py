"""Exact weight identity without copies: digests, fingerprints of saved checkpoints, chunked
comparison against the memory-mapped checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from causalloc.models import weights
from causalloc.models.weights import SavedWeights, row_chunks, tensor_digest, weights_fingerprint
from causalloc.unlearn.trainer import ParameterSnapshot
from tests.conftest import tiny_llama


def test_tensor_digest_sees_every_bit_dtype_and_shape():
    x = torch.randn(4, 6)
    assert tensor_digest(x) == tensor_digest(x.clone())
    flipped = x.clone()
    flipped.view(torch.int32)[2, 3] ^= 1  # the lowest mantissa bit of one value
    assert tensor_digest(flipped) != tensor_digest(x)
    assert tensor_digest(x.reshape(6, 4)) != tensor_digest(x)
    assert tensor_digest(x.to(torch.bfloat16)) != tensor_digest(x)
    assert tensor_digest(x.T) == tensor_digest(x.T.contiguous())


def test_fingerprint_ignores_sharding_and_sees_one_changed_value(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    assert weights_fingerprint(tmp_path / "one") == weights_fingerprint(tmp_path / "shards")
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-6
    model.save_pretrained(tmp_path / "changed")
    assert weights_fingerprint(tmp_path / "changed") != weights_fingerprint(tmp_path / "one")


def test_chunked_comparison_is_exact_along_either_unit_axis(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "CHUNK_BYTES", 64)  # a few rows per chunk
    model = tiny_llama()
    model.save_pretrained(tmp_path / "theta", max_shard_size="20KB")
    assert [(c.start, c.stop) for c in row_chunks((10, 4), 4)] == [(0, 4), (4, 8), (8, 10)]
    snapshot = ParameterSnapshot(model, saved=tmp_path / "theta")
    name = "model.layers.0.self_attn.q_proj.weight"
    weight = dict(model.named_parameters())[name]
    with torch.no_grad():
        weight[5, 1] += 0.5
        weight[9, 2] -= 0.25
    assert snapshot.max_abs_change(model) == {name: pytest.approx(0.5, rel=1e-6)}
    assert snapshot.max_abs_change(model, {name: (0, torch.tensor([5]))}) == {name: pytest.approx(0.25, rel=1e-6)}
    assert snapshot.max_abs_change(model, {name: (1, torch.tensor([1, 2]))}) == {name: 0.0}
    assert SavedWeights(tmp_path / "theta").rows(name, slice(4, 8)).shape == (4, 32)
    snapshot.restore(model)
    assert snapshot.changed(model) == []


def test_testbed_record_keeps_the_fingerprint_and_fills_it_in_for_older_records(tmp_path):
    from causalloc.testbed import build_testbed, config_for
    from tests.unit.test_testbed import FAST

    torch.set_num_threads(1)
    testbed = build_testbed(config_for("tiny", **FAST), cache_dir=tmp_path)
    record = testbed.path / "testbed.json"
    expected = weights_fingerprint(testbed.path / "theta_o")
    assert json.loads(record.read_text())["theta_o_fingerprint"] == expected == testbed.theta_o_fingerprint
    older = json.loads(record.read_text())
    del older["theta_o_fingerprint"]
    record.write_text(json.dumps(older))
    assert testbed.theta_o_fingerprint == expected
    assert json.loads(record.read_text())["theta_o_fingerprint"] == expected


def test_a_checkpoint_lacking_a_parameter_is_named(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "theta")
    other = tiny_llama(layers=3)
    with pytest.raises(Exception, match="lacks parameter"):
        ParameterSnapshot(other, saved=tmp_path / "theta")
