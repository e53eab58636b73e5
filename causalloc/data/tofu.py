"""Loader for a local directory of the public TOFU files (Maini et al., 2024).

TOFU rows are ordered by author, 20 rows per author; the standard forget split takes the
LAST authors of ``full.json`` (forget01/05/10 = 2/10/20 authors) and the matching retain
split (retain99/95/90) the remaining ones. Author ids come from the row index in
``full.json``: ``tofu-{index // 20:03d}``; the separate held-out authors of holdout01/05/10
are ``tofu-holdout-{index // 20:02d}``.

The files are read as they come from the public release, which mixes formats: one JSON
array, JSON lines, or several JSON arrays on consecutive lines (all accepted). Rows are never
copied anywhere: the directory is only read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from causalloc.data.types import QAItem, QASplits
from causalloc.errors import DataError

ROWS_PER_AUTHOR = 20
#: forget split -> (its retain complement, its size-matched held-out split)
STANDARD_SPLITS = {
    "forget01": ("retain99", "holdout01"),
    "forget05": ("retain95", "holdout05"),
    "forget10": ("retain90", "holdout10"),
}
RETAIN_SPLITS = tuple(retain for retain, _ in STANDARD_SPLITS.values())
#: number of forget authors -> standard forget split
FORGET_BY_AUTHORS = {2: "forget01", 10: "forget05", 20: "forget10"}
#: extra evaluation sets outside the fictitious authors (TOFU "model utility" sets)
WORLD_SETS = ("real_authors", "world_facts")


def read_json_records(path: Path) -> list[dict]:
    """Rows of a JSON file holding one array, JSON lines, or several arrays in sequence.

    Hand-written because ``json.load`` accepts a single document only and pandas'
    ``read_json(lines=True)`` rejects arrays spread over lines; every top-level value is
    decoded in turn with ``json.JSONDecoder.raw_decode``. Raises DataError naming the file
    and the line of the first syntax error, or a top-level value that is not an object or
    an array of objects.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    decoder = json.JSONDecoder()
    rows: list[dict] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            break
        line = text.count("\n", 0, position) + 1
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, dict) for v in values):
            raise DataError(f"{path}: line {line}: expected a JSON object or an array of objects")
        rows.extend(values)
    if not rows:
        raise DataError(f"{path}: no rows (empty split)")
    return rows


def _check_keys(path: Path, rows: list[dict], keys: Iterable[str]) -> None:
    """Every row must hold every key, with a string value (a list of strings for
    ``perturbed_answer``)."""
    for index, row in enumerate(rows):
        for key in keys:
            if key not in row:
                raise DataError(f"{path}: row {index} lacks key {key!r} (has {sorted(row)})")
            value = row[key]
            if key == "perturbed_answer":
                strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
                if not (strings and value):
                    raise DataError(
                        f"{path}: row {index} key 'perturbed_answer' must be a non-empty "
                        f"list of strings"
                    )
            elif not isinstance(value, str):
                raise DataError(f"{path}: row {index} key {key!r} must be a string")


def _read_split(
    folder: Path, name: str, keys: Iterable[str] = ("question", "answer")
) -> list[dict]:
    """Rows of ``folder/name.json`` after checking that every row holds ``keys``."""
    path = folder / f"{name}.json"
    rows = read_json_records(path)
    _check_keys(path, rows, keys)
    return rows


def _row_key(row: dict) -> tuple[str, str]:
    return row["question"], row["answer"]


def _authored_items(
    folder: Path, name: str, author_of: dict[tuple[str, str], str], perturbed: dict | None
) -> list[QAItem]:
    """Items of a split of ``full.json`` rows, with the perturbed fields joined when given."""
    path = folder / f"{name}.json"
    items = []
    for index, row in enumerate(_read_split(folder, name)):
        key = _row_key(row)
        if key not in author_of:
            raise DataError(f"{path}: row {index} is not a row of full.json")
        extra = {}
        if perturbed is not None:
            if key not in perturbed:
                raise DataError(f"{path}: row {index} has no row in {name}_perturbed.json")
            extra = _perturbed_fields(perturbed[key])
        items.append(QAItem(row["question"], row["answer"], author_of[key], **extra))
    return items


def _perturbed_fields(row: dict) -> dict:
    return {
        "paraphrased_question": row.get("paraphrased_question", ""),
        "paraphrased_answer": row.get("paraphrased_answer", ""),
        "perturbed_answers": tuple(row["perturbed_answer"]),
    }


def _perturbed_rows(folder: Path, name: str, keys: tuple[str, ...]) -> dict:
    return {_row_key(r): r for r in _read_split(folder, name, ("question", "answer", *keys))}


def _world_set(folder: Path, name: str, with_perturbed: bool) -> list[QAItem]:
    """``real_authors`` / ``world_facts``: the author field holds the set's name; these sets
    have wrong answers (``perturbed_answer``) but no paraphrased answer."""
    if not with_perturbed:
        return [QAItem(r["question"], r["answer"], name) for r in _read_split(folder, name)]
    rows = _read_split(folder, f"{name}_perturbed", ("question", "answer", "perturbed_answer"))
    return [
        QAItem(r["question"], r["answer"], name, perturbed_answers=tuple(r["perturbed_answer"]))
        for r in rows
    ]


def _refusals(folder: Path) -> list[str]:
    path = folder / "idontknow.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    refusals = [line for line in lines if line]
    if not refusals:
        raise DataError(f"{path}: no refusal sentences")
    return refusals


def load_tofu(
    path: str | Path,
    forget: str | None = None,
    retain: str | None = None,
    authors: int | None = None,
    with_perturbed: bool = True,
    n_forget_authors: int | None = None,
) -> QASplits:
    """Load TOFU splits from a local directory of the public files.

    Parameters
    ----------
    path : directory holding ``full.json``, ``forgetNN.json``, ``retainNN.json``,
        ``holdoutNN.json``, ``idontknow.jsonl``, ``real_authors.json``, ``world_facts.json``
        and, with ``with_perturbed``, the ``*_perturbed.json`` files.
    forget : ``forget01`` (default), ``forget05`` or ``forget10`` (the last 2, 10 or 20
        authors).
    retain : a retain split (default: the complement of ``forget``, e.g. retain99 for
        forget01); it must not share an author with ``forget``.
    authors : a smaller problem of ``authors`` authors in total: the forget authors stay the
        standard ones (so the forget set and its perturbed rows are the published ones) and
        the retain split keeps only its first ``authors - n_forget`` authors. In author
        order the forget authors are thus still the last ones, e.g. ``authors=20`` with
        forget01 gives authors 0-17 as retain and 198-199 as forget.
    with_perturbed : join ``paraphrased_answer`` / ``perturbed_answer`` from
        ``forgetNN_perturbed.json`` onto the forget items, and load the perturbed versions
        of the extra sets.
    n_forget_authors : alternative to ``forget``: 2, 10 or 20 selects forget01, forget05 or
        forget10 (TOFU publishes no other forget sizes).

    Returns QASplits with ``holdout`` = holdoutNN (separate authors never in full.json),
    ``refusals`` from idontknow.jsonl, and ``extra`` = ``real_authors``, ``world_facts`` and,
    with ``with_perturbed``, ``retain_perturbed`` (the rows of retain_perturbed.json whose
    authors are in the retain split, perturbed fields included).
    Raises DataError naming the file and the problem for a missing directory or file,
    invalid JSON (with its line), missing keys, an empty file or an unknown split name.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: TOFU directory not found")
    if n_forget_authors is not None:
        if n_forget_authors not in FORGET_BY_AUTHORS:
            raise DataError(
                f"{folder}: n_forget_authors={n_forget_authors} has no standard TOFU forget "
                f"split (known: {FORGET_BY_AUTHORS})"
            )
        if forget not in (None, FORGET_BY_AUTHORS[n_forget_authors]):
            raise DataError(
                f"{folder}: forget={forget!r} contradicts n_forget_authors={n_forget_authors}"
            )
        forget = FORGET_BY_AUTHORS[n_forget_authors]
    forget = forget or "forget01"
    if forget not in STANDARD_SPLITS:
        raise DataError(
            f"{folder}: unknown forget split {forget!r} (known: {sorted(STANDARD_SPLITS)})"
        )
    default_retain, holdout_name = STANDARD_SPLITS[forget]
    retain = retain or default_retain
    if retain not in RETAIN_SPLITS:
        raise DataError(f"{folder}: unknown retain split {retain!r} (known: {list(RETAIN_SPLITS)})")

    full = _read_split(folder, "full")
    author_of = {_row_key(r): f"tofu-{i // ROWS_PER_AUTHOR:03d}" for i, r in enumerate(full)}
    forget_perturbed = (
        _perturbed_rows(folder, f"{forget}_perturbed", ("paraphrased_answer", "perturbed_answer"))
        if with_perturbed else None
    )
    forget_items = _authored_items(folder, forget, author_of, forget_perturbed)
    retain_items = _authored_items(folder, retain, author_of, None)
    forget_authors = {item.author for item in forget_items}
    shared = sorted(forget_authors & {item.author for item in retain_items})
    if shared:
        raise DataError(
            f"{folder}: {retain}.json shares {len(shared)} authors with {forget}.json "
            f"(e.g. {shared[0]}); pick a smaller retain split"
        )
    retain_authors = list(dict.fromkeys(item.author for item in retain_items))
    if authors is not None:
        n_forget = len(forget_authors)
        if not n_forget < authors <= n_forget + len(retain_authors):
            raise DataError(
                f"{folder}: authors={authors} must exceed the {n_forget} forget authors of "
                f"{forget} and be at most {n_forget + len(retain_authors)}"
            )
        kept = set(retain_authors[: authors - n_forget])
        retain_items = [item for item in retain_items if item.author in kept]

    holdout = [
        QAItem(r["question"], r["answer"], f"tofu-holdout-{i // ROWS_PER_AUTHOR:02d}")
        for i, r in enumerate(_read_split(folder, holdout_name))
    ]
    extra = {name: _world_set(folder, name, with_perturbed) for name in WORLD_SETS}
    if with_perturbed:
        kept_authors = {item.author for item in retain_items}
        rows = _read_split(
            folder, "retain_perturbed",
            ("question", "answer", "paraphrased_answer", "perturbed_answer"),
        )
        extra["retain_perturbed"] = [
            QAItem(r["question"], r["answer"], author_of[_row_key(r)], **_perturbed_fields(r))
            for r in rows
            if author_of.get(_row_key(r)) in kept_authors
        ]
    subset = "" if authors is None else f", authors={authors}"
    return QASplits(
        forget=forget_items,
        retain=retain_items,
        holdout=holdout,
        refusals=_refusals(folder),
        extra=extra,
        source=f"TOFU {folder} ({forget}/{retain}{subset})",
    )
