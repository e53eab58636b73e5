"""The shared vocabulary: condition grammar, metric facts, cell labels."""

from __future__ import annotations

import math
import sys

import pytest

from causalloc import vocab
from causalloc.vocab import (
    DEFAULT_SESOI,
    HIGHER_IS_BETTER,
    ConditionError,
    Metric,
    cell_label,
    condition_kinds,
    metric,
    metric_label,
    parse_strategy,
    split_condition,
)


def test_grammar_splits_at_the_first_colon_and_checks_kinds():
    assert split_condition("layer_matched:attributed:x") == ("layer_matched", "attributed:x")
    assert split_condition("oracle") == ("oracle", None)
    assert parse_strategy("overlap:0.25") == ("overlap", 0.25)
    assert parse_strategy("random") == ("random", None)
    assert parse_strategy("attributed:wagle") == ("attributed", "wagle")
    for bad, message in (("oracel", "did you mean 'oracle'"), ("random:3", "unknown strategy"),
                         ("disjoint:", "needs an argument"), ("overlap:2", "must be in [0, 1]"),
                         ("overlap:x", "must be a number")):
        with pytest.raises(ConditionError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_strategy(bad)


def test_condition_kinds_from_design_or_name():
    design = {"conditions": {"mine": {"kind": "attributed"}}}
    kinds = condition_kinds(["mine", "disjoint:mine", "oracle", "masks_x", "random"], design)
    assert kinds == {"mine": ("attributed", None), "disjoint:mine": ("disjoint", "mine"),
                     "oracle": ("oracle", None), "masks_x": ("given", None),
                     "random": ("random", None)}
    assert vocab.is_random_like("random_3") and vocab.is_random_like("layer_matched:a")
    assert not vocab.is_random_like("disjoint:a")


def test_one_entry_per_metric_gives_every_fact():
    names = [m.name for m in vocab.METRICS]
    assert len(names) == len(set(names))
    assert DEFAULT_SESOI["aues"] == 0.02 and DEFAULT_SESOI["mu95"] == 1.0
    assert HIGHER_IS_BETTER["relearn_es"] is False
    assert "forget_quality" not in DEFAULT_SESOI  # no default SESOI: the analysis must be given one
    assert "forget_quality" in vocab.RUN_METRICS
    assert metric_label("fs_at_rs95") == "FS@RS95" and metric_label("mystery") == "mystery"
    assert metric("log_forget_quality").range == (-math.inf, 0.0)
    for m in vocab.METRICS:  # every fact is present and consistent
        assert m.label and m.scale and m.low < m.high
        assert m.sesoi is None or m.sesoi > 0


def test_a_pattern_entry_stands_for_its_columns(monkeypatch):
    pattern = Metric("relearn_recovery_s{steps}_lr{lr}", "relearning recovery ({steps} steps, lr {lr})",
                     False, 0.02, "forget ES regained", -1.0, 1.0)
    monkeypatch.setattr(vocab, "_PATTERNS", [pattern])
    found = metric("relearn_recovery_s20_lr1e-4")
    assert found.name == "relearn_recovery_s20_lr1e-4"
    assert found.label == "relearning recovery (20 steps, lr 1e-4)"
    assert DEFAULT_SESOI["relearn_recovery_s20_lr1e-4"] == 0.02
    assert HIGHER_IS_BETTER.get("relearn_recovery_s20_lr1e-4") is False
    assert metric("relearn_recovery") is vocab._BY_NAME["relearn_recovery"]  # exact names first
    assert metric("relearn_recovery_s20") is None


def test_cell_label_has_the_two_texts_the_outputs_use():
    cell = {"model": "tiny", "algorithm": "npo", "budget": 0.1}
    assert cell_label(cell) == "tiny, npo, budget 0.1"  # reports
    assert cell_label(cell, named=True) == "model=tiny, algorithm=npo, budget=0.1"  # comparisons.csv
    assert cell_label({}) == cell_label({}, named=True) == "all"


def test_vocabulary_needs_no_torch():
    import subprocess

    code = ("import sys, causalloc.vocab, causalloc.stats, causalloc.runs.spec; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
