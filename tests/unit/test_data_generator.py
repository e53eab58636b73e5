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
