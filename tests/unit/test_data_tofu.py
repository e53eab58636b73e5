"""The TOFU loader: file formats, standard splits, subsets and broken input.

Broken-input tests use a small TOFU-shaped directory written from the project's own
generated authors (never TOFU rows); tests on the real files read $CAUSALLOC_TOFU_DIR and
skip, saying so, when it is unset.
"""

import json
from pathlib import Path

import pytest

from causalloc.data.generator import generate_authors
from causalloc.data.tofu import load_tofu, read_json_records
from causalloc.errors import DataError
from tests.conftest import TOFU_DIR, TOFU_SKIP, has_tofu

needs_tofu = pytest.mark.skipif(not has_tofu(), reason=TOFU_SKIP)


def _rows(items, perturbed=False):
    rows = []
    for item in items:
        row = {"question": item.question, "answer": item.answer}
        if perturbed:
            row.update(paraphrased_question=item.paraphrased_question,
                       paraphrased_answer=item.paraphrased_answer,
                       perturbed_answer=list(item.perturbed_answers))
        rows.append(row)
    return rows


def _write(path: Path, rows, style="array"):
    """Write rows as one JSON array, JSON lines, or one array per 20 rows on its own line."""
    if style == "array":
        text = json.dumps(rows)
    elif style == "lines":
        text = "\n".join(json.dumps(r) for r in rows) + "\n"
    else:
        text = "\n".join(json.dumps(rows[i:i + 20]) for i in range(0, len(rows), 20)) + "\n"
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def tofu_like(tmp_path):
    """A TOFU-shaped directory: 6 authors x 20 rows; forget01 = last author, holdout01 = one
    more author; each file format of the public release appears at least once."""
    items = generate_authors(n_authors=7, n_questions=20, seed=11)
    full, held = items[:120], items[120:]
    _write(tmp_path / "full.json", _rows(full), "arrays")
    _write(tmp_path / "retain99.json", _rows(full[:100]), "lines")
    _write(tmp_path / "forget01.json", _rows(full[100:]))
    _write(tmp_path / "forget01_perturbed.json", _rows(full[100:], perturbed=True))
    _write(tmp_path / "retain_perturbed.json", _rows(full[:40], perturbed=True))
    _write(tmp_path / "holdout01.json", _rows(held), "arrays")
    for name in ("real_authors", "world_facts"):
        _write(tmp_path / f"{name}.json", _rows(full[:3]))
        _write(tmp_path / f"{name}_perturbed.json",
               [{**r, "perturbed_answer": ["x", "y", "z"]} for r in _rows(full[:3])])
    (tmp_path / "idontknow.jsonl").write_text("I do not know.\n\nNo idea.\n", encoding="utf-8")
    return tmp_path, full


def test_all_three_json_layouts_read_the_same_rows(tmp_path):
    rows = _rows(generate_authors(3, 20, seed=0))
    for style in ("array", "lines", "arrays"):
        _write(tmp_path / f"{style}.json", rows, style)
        assert read_json_records(tmp_path / f"{style}.json") == rows


def test_tofu_like_directory_loads_with_author_ids_and_joined_perturbations(tofu_like):
    folder, full = tofu_like
    splits = load_tofu(folder, "forget01")
    assert [i.question for i in splits.forget] == [i.question for i in full[100:]]
    assert {i.author for i in splits.forget} == {"tofu-005"}
    assert {i.author for i in splits.retain} == {f"tofu-{a:03d}" for a in range(5)}
    assert splits.forget[3].perturbed_answers == full[103].perturbed_answers
    assert splits.forget[3].paraphrased_answer == full[103].paraphrased_answer
    assert {i.author for i in splits.holdout} == {"tofu-holdout-00"}
    assert splits.refusals == ["I do not know.", "No idea."]
    assert len(splits.split("retain_perturbed")) == 40
    assert splits.split("world_facts")[0].perturbed_answers == ("x", "y", "z")


def test_author_subset_keeps_the_forget_authors_and_the_first_retain_authors(tofu_like):
    folder, _ = tofu_like
    splits = load_tofu(folder, "forget01", authors=3)
    assert {i.author for i in splits.retain} == {"tofu-000", "tofu-001"}
    assert {i.author for i in splits.forget} == {"tofu-005"}
    assert {i.author for i in splits.split("retain_perturbed")} == {"tofu-000", "tofu-001"}
    with pytest.raises(DataError, match="authors=1 must exceed the 1 forget authors"):
        load_tofu(folder, "forget01", authors=1)


def test_forget_split_chosen_by_its_number_of_authors(tofu_like):
    folder, _ = tofu_like
    by_count = load_tofu(folder, n_forget_authors=2, authors=3)
    assert by_count.source == load_tofu(folder, "forget01", authors=3).source
    with pytest.raises(DataError, match="n_forget_authors=3 has no standard TOFU forget split"):
        load_tofu(folder, n_forget_authors=3)
    with pytest.raises(DataError, match="forget='forget05' contradicts n_forget_authors=2"):
        load_tofu(folder, "forget05", n_forget_authors=2)


def test_without_perturbed_files_the_loader_needs_no_perturbed_file(tofu_like):
    folder, _ = tofu_like
    for path in folder.glob("*_perturbed.json"):
        path.unlink()
    splits = load_tofu(folder, with_perturbed=False)
    assert splits.forget[0].perturbed_answers == ()
    assert "retain_perturbed" not in splits.extra
    with pytest.raises(DataError, match="forget01_perturbed.json: file not found"):
        load_tofu(folder)


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("forget01.json", '[{"question": "q", "answer": "a"},\n {"question": "q2" "answer"}]',
         r"forget01.json: invalid JSON at line 2"),
        ("forget01.json", "[]", r"forget01.json: no rows \(empty split\)"),
        ("forget01.json", '[{"question": "q", "reply": "a"}]',
         r"forget01.json: row 0 lacks key 'answer'"),
        ("forget01.json", '[{"question": "q", "answer": "a"}]',
         r"forget01.json: row 0 is not a row of full.json"),
        ("retain99.json", '{"question": "q", "answer": 3}\n',
         r"retain99.json: row 0 key 'answer' must be a string"),
        ("forget01_perturbed.json", '[[1, 2]]', r"forget01_perturbed.json: line 1: expected"),
        ("world_facts_perturbed.json", '[{"question": "q", "answer": "a", "perturbed_answer": []}]',
         r"world_facts_perturbed.json: row 0 key 'perturbed_answer' must be a non-empty list"),
        ("idontknow.jsonl", "\n\n", r"idontknow.jsonl: no refusal sentences"),
    ],
)
def test_broken_files_raise_naming_file_and_problem(tofu_like, file, content, message):
    folder, _ = tofu_like
    (folder / file).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_tofu(folder)


def test_missing_directory_file_and_unknown_split_names_raise(tofu_like, tmp_path):
    folder, _ = tofu_like
    with pytest.raises(DataError, match="TOFU directory not found"):
        load_tofu(tmp_path / "absent")
    with pytest.raises(DataError, match=r"unknown forget split 'forget07'"):
        load_tofu(folder, "forget07")
    with pytest.raises(DataError, match=r"unknown retain split 'retain50'"):
        load_tofu(folder, retain="retain50")
    (folder / "holdout01.json").unlink()
    with pytest.raises(DataError, match=r"holdout01.json: file not found"):
        load_tofu(folder)


@needs_tofu
@pytest.mark.parametrize("forget, n_authors", [("forget01", 2), ("forget05", 10), ("forget10", 20)])
def test_public_standard_splits(forget, n_authors):
    splits = load_tofu(TOFU_DIR, forget)
    first_forget = 200 - n_authors
    assert len(splits.forget) == 20 * n_authors
    assert len(splits.retain) == 4000 - 20 * n_authors
    assert {i.author for i in splits.forget} == {f"tofu-{a:03d}" for a in range(first_forget, 200)}
    assert max(i.author for i in splits.retain) == f"tofu-{first_forget - 1:03d}"
    assert len(splits.holdout) == 20 * n_authors
    assert all(len(i.perturbed_answers) == 5 and i.paraphrased_answer for i in splits.forget)
    assert len(splits.refusals) == 100
    assert len(splits.split("real_authors")) == 100 and len(splits.split("world_facts")) == 117
    assert len(splits.split("retain_perturbed")) == 400


@needs_tofu
def test_public_subset_of_twenty_authors_and_overlapping_retain_rejected():
    splits = load_tofu(TOFU_DIR, "forget01", authors=20)
    assert len(splits.retain) == 360 and len(splits.forget) == 40
    assert len(splits.split("retain_perturbed")) == 360
    with pytest.raises(DataError, match="retain99.json shares 18 authors with forget10.json"):
        load_tofu(TOFU_DIR, "forget10", retain="retain99")
