"""Hooks: attached together, removed together on every way out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causalloc.models.hooks import Hooks


def _count_hooks(module: nn.Module) -> int:
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


def test_hooks_are_removed_when_the_block_fails():
    layer = nn.Linear(2, 2)
    seen = []
    with pytest.raises(RuntimeError, match="boom"), Hooks() as hooks:
        hooks.pre(layer, lambda m, args: seen.append("pre"))
        hooks.forward(layer, lambda m, args, out: seen.append("forward"))
        layer(torch.zeros(1, 2))
        assert _count_hooks(layer) == len(hooks) == 2
        raise RuntimeError("boom")
    assert seen == ["pre", "forward"]
    assert _count_hooks(layer) == 0


def test_a_failing_registration_removes_the_hooks_already_attached():
    layer = nn.Linear(2, 2)
    with pytest.raises(AttributeError), Hooks() as hooks:
        hooks.forward(layer, lambda m, args, out: None)
        hooks.forward(None, lambda m, args, out: None)  # not a module
    assert _count_hooks(layer) == 0


def test_a_held_group_is_removed_on_demand():
    layer = nn.Linear(2, 2)
    hooks = Hooks().forward(layer, lambda m, args, out: out * 0)
    assert layer(torch.ones(1, 2)).abs().sum() == 0
    hooks.remove()
    hooks.remove()  # twice is fine
    assert _count_hooks(layer) == 0 and layer(torch.ones(1, 2)).abs().sum() > 0
