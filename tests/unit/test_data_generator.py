"""The fictitious-author generator: determinism, author-level splits, wrong answers."""

import subprocess
import sys
from pathlib import Path

import pytest

from causalloc.data.generator import (
    REFUSALS,
    TEMPLATES,
    generate_authors,
    generated_splits,
    make_splits,
    utility_sets,
)
from causalloc.errors import DataError


def test_same_seed_gives_identical_items_and_other_seed_differs():
    assert generate_authors(5, 20, seed=3) == generate_authors(5, 20, seed=3)
    assert generate_authors(5, 20, seed=3) != generate_authors(5, 20, seed=4)


def test_items_are_grouped_by_author_with_unique_names():
    items = generate_authors(n_authors=7, n_questions=12, seed=1)
    assert len(items) == 7 * 12
    authors = [items[i].author for i in range(0, len(items), 12)]
    assert len(set(authors)) == 7
    for index, item in enumerate(items):
        assert item.author == authors[index // 12]
        assert item.author in item.question or item.author in item.answer


def test_perturbed_answers_are_distinct_wrong_paraphrases():
    for item in generate_authors(10, len(TEMPLATES), seed=2):
        assert item.paraphrased_question and item.paraphrased_question != item.question
        assert item.paraphrased_answer and item.paraphrased_answer != item.answer
        assert len(item.perturbed_answers) == 5
        assert len(set(item.perturbed_answers)) == 5
        assert item.answer not in item.perturbed_answers
        assert item.paraphrased_answer not in item.perturbed_answers


def test_answers_are_short_and_end_with_a_fact_absent_from_the_question():
    """The testbed needs a last answer word that the question does not give away."""
    for item in generate_authors(20, len(TEMPLATES), seed=0):
        words = item.answer.split()
        assert 5 <= len(words) <= 15, item.answer
        assert words[-1] not in item.question.replace("?", "").split(), item


def test_make_splits_puts_the_last_authors_in_forget_and_keeps_authors_apart():
    items = generate_authors(10, 4, seed=0)
    order = list(dict.fromkeys(item.author for item in items))
    splits = make_splits(items, n_forget_authors=2, n_holdout_authors=3)
    forget = {i.author for i in splits.forget}
    holdout = {i.author for i in splits.holdout}
    retain = {i.author for i in splits.retain}
    assert forget == set(order[-2:])
    assert holdout == set(order[-5:-2])
    assert retain == set(order[:5])
    assert len(splits.forget) == 8 and len(splits.holdout) == 12 and len(splits.retain) == 20
    assert splits.refusals == list(REFUSALS) and len(REFUSALS) >= 20


def test_make_splits_with_a_seed_draws_a_different_forget_set_reproducibly():
    items = generate_authors(12, 2, seed=0)
    first = {i.author for i in make_splits(items, 3, seed=7).forget}
    again = {i.author for i in make_splits(items, 3, seed=7).forget}
    last = {i.author for i in make_splits(items, 3).forget}
    assert first == again and len(first) == 3
    assert first != last
    assert "seed 7" in make_splits(items, 3, seed=7).source


def test_generated_splits_default_sizes():
    splits = generated_splits()
    assert (len(splits.forget), len(splits.retain), len(splits.holdout)) == (40, 360, 0)
    assert "seed=0" in splits.source


@pytest.mark.parametrize(
    "kwargs",
    [{"n_authors": 0}, {"n_questions": len(TEMPLATES) + 1}, {"n_perturbed": 0}],
)
def test_impossible_generator_sizes_raise(kwargs):
    with pytest.raises(DataError, match="generator"):
        generate_authors(**kwargs)


def test_splits_that_leave_no_retain_author_raise():
    items = generate_authors(4, 2, seed=0)
    with pytest.raises(DataError, match="no retain author"):
        make_splits(items, n_forget_authors=3, n_holdout_authors=1)
    with pytest.raises(DataError, match="n_forget_authors >= 1"):
        make_splits(items, n_forget_authors=0)


def test_data_package_loads_without_torch():
    """stats/ and report/ may use the data types; importing them must not pull in torch."""
    code = "import sys, causalloc.data; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_utility_sets_are_deterministic_and_shaped_like_tofus():
    splits = generated_splits(8, 2, 20, seed=5, n_utility=30)
    assert splits.extra == generated_splits(8, 2, 20, seed=5, n_utility=30).extra
    assert splits.extra != generated_splits(8, 2, 20, seed=6, n_utility=30).extra
    # the authors do not depend on whether utility sets are drawn
    plain = generated_splits(8, 2, 20, seed=5)
    assert (plain.forget, plain.retain, plain.extra) == (splits.forget, splits.retain, {})
    assert {name: len(items) for name, items in splits.extra.items()} == {
        "retain_perturbed": 30, "real_authors": 30, "world_facts": 30}
    retain_questions = [item.question for item in splits.retain]
    subset = [retain_questions.index(item.question) for item in splits.extra["retain_perturbed"]]
    assert subset == sorted(subset) and splits.extra["retain_perturbed"][0].paraphrased_answer
    authors = {item.author for item in splits.forget + splits.retain}
    for name in ("real_authors", "world_facts"):
        items = splits.extra[name]
        assert len({item.question for item in items}) == len(items)
        for item in items:
            assert item.author == name and not item.paraphrased_answer
            assert len(set(item.perturbed_answers)) == 3 and item.answer not in item.perturbed_answers
    classics = {item.answer for item in splits.extra["real_authors"] if item.question.startswith("Who wrote")}
    assert classics and not classics & authors


def test_utility_set_sizes_are_checked():
    splits = generated_splits(4, 1, 4, seed=0)
    assert {len(v) for v in utility_sets(splits, 80).values()} == {12, 80}  # retain: all 3 x 4 items
    with pytest.raises(DataError, match="at most 80 utility items"):
        utility_sets(splits, 81)
    with pytest.raises(DataError, match=">= 1"):
        utility_sets(splits, 0)
