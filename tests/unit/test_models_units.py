"""Unit adapters on tiny random LLaMA, GPT-NeoX and GPT-2 models built from configs."""

import pytest
import torch

from causalloc.models.loading import build_tiny_model
from causalloc.models.units import UnitAdapter, adapter_for

HIDDEN, INTERMEDIATE, LAYERS = 16, 24, 2


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gpt2"])
def model(request):
    return build_tiny_model(
        request.param, vocab_size=40, seed=1, hidden=HIDDEN, intermediate=INTERMEDIATE,
        layers=LAYERS, heads=2,
    )


def test_signature_matches_the_config(model):
    signature = adapter_for(model).signature
    assert signature.arch == model.config.model_type
    assert (signature.n_layers, signature.n_units, signature.hidden) == (
        LAYERS, INTERMEDIATE, HIDDEN)


def test_value_vector_is_the_documented_slice_of_the_module_weight(model):
    adapter = UnitAdapter(model)
    layer, unit = 1, 5
    weight = adapter.value_weight(layer)
    before = weight.detach().clone()
    new_vector = torch.arange(HIDDEN, dtype=weight.dtype)
    with torch.no_grad():
        adapter.value_matrix(layer)[unit] = new_vector
    changed = (weight.detach() != before).nonzero()
    if adapter.family == "gpt2":  # Conv1D: row ``unit`` of c_proj.weight [I, hidden]
        assert torch.equal(weight[unit].detach(), new_vector)
        assert set(changed[:, 0].tolist()) == {unit}
    else:  # nn.Linear: column ``unit`` of the [hidden, I] output projection
        assert torch.equal(weight[:, unit].detach(), new_vector)
        assert set(changed[:, 1].tolist()) == {unit}
    with torch.no_grad():
        weight.copy_(before)


def test_mlp_output_is_activation_times_value_matrix_plus_bias(model):
    adapter = UnitAdapter(model)
    layer = 0
    module = adapter.value_modules[layer]
    captured = {}
    pre = module.register_forward_pre_hook(lambda m, args: captured.update(act=args[0]))
    post = module.register_forward_hook(lambda m, args, out: captured.update(out=out))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 7, 3, 9, 2]]))
    finally:
        pre.remove()
        post.remove()
    act = captured["act"]
    assert act.shape[-1] == INTERMEDIATE
    bias = module.bias if getattr(module, "bias", None) is not None else 0.0
    expected = act @ adapter.value_matrix(layer) + bias
    torch.testing.assert_close(captured["out"], expected, rtol=1e-5, atol=1e-5)


def test_value_norms_have_one_row_per_layer(model):
    adapter = UnitAdapter(model)
    norms = adapter.value_norms()
    assert norms.shape == (LAYERS, INTERMEDIATE)
    torch.testing.assert_close(norms[1, 3], adapter.value_matrix(1)[3].norm())
