"""RWKU result folders -> a causalloc run table (one row per unlearning run).

RWKU (jinzhuoran/RWKU, Jin et al. 2024, "RWKU: Benchmarking Real-World Knowledge
Unlearning for Large Language Models") writes, per unlearned target, a folder
``results/RWKU/<setting>/<target>/<method>/<model>/`` with ``forget.json`` and
``neighbor.json`` (LLaMA-Factory/src/llmtuner/eval/eval_forget.py, eval_neighbor.py):
``level_<k>_rouge_l_r`` (k = 1, 2, 3 for forget: fill-in-the-blank, question-answer,
adversarial-attack probes; k = 1, 2 for neighbor), ``level_<k>_rouge`` (the full ROUGE
dict) and ``results``, the per-probe list with ``level``, ``subject``, ``answer`` and
``prediction``.

Per level: ``<file>_l<k>_rouge_l_r`` is RWKU's own level score, the mean over the level's
probes of ROUGE-L recall of the prediction against the answer (``rouge`` package,
``get_scores(avg=True)``), taken from ``level_<k>_rouge_l_r`` (else
``level_<k>_rouge["rouge-l"]["r"]``); ROUGE is not recomputed from the predictions (it would
have to match that package's tokenizer). ``<file>_l<k>_n`` counts the level's probes in
``results``, and ``<file>_all_rouge_l_r`` = sum_k n_k * score_k / sum_k n_k, the mean recall
over all the file's probes (exact, since each level score is a mean over its probes; only
when ``results`` gives the counts). Scale [0, 1]. Direction: forget lower is better,
neighbor higher is better; counts have none.

The run's name is the folder's path; ``KEY`` rules read ``target`` (the probes' ``subject``,
several joined by ``+``) and ``folder`` (the folder's name); method and model sit in the path,
so ``--block 'method=/([^/]+)/[^/]+$'`` style regexes (searched in the path) pick them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causalloc.errors import DataError
from causalloc.importers.common import ImportedRun, MetricFact, build_table, find_files, read_json

#: result file -> (levels, higher_is_better, what its probes test)
FILES = {"forget": ((1, 2, 3), False, "knowledge of the unlearning target"),
         "neighbor": ((1, 2), True, "neighbouring knowledge that should stay")}
WHAT = "an RWKU forget.json (keys level_1_rouge_l_r, level_2_rouge_l_r, level_3_rouge_l_r, results)"


def _level_score(data: dict, level: int):
    value = data.get(f"level_{level}_rouge_l_r")
    if value is None and isinstance(data.get(f"level_{level}_rouge"), dict):
        value = data[f"level_{level}_rouge"].get("rouge-l", {}).get("r")
    return value


def read_levels(path: Path, kind: str) -> tuple[dict[str, float], dict[str, MetricFact], set]:
    """Metrics, facts and subjects of one forget.json / neighbor.json (module docstring)."""
    levels, higher, about = FILES[kind]
    data = read_json(path, WHAT if kind == "forget" else f"an RWKU {kind}.json")
    scores = {k: _level_score(data, k) for k in levels}
    missing = [f"level_{k}_rouge_l_r" for k, v in scores.items() if v is None]
    if missing:
        raise DataError(f"{path}: not an RWKU {kind}.json: missing {missing} (top-level keys: "
                        f"{list(data)[:8]})")
    for k, value in scores.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DataError(f"{path}: level_{k}_rouge_l_r: expected a number, got {value!r}")
    items = data.get("results")
    if items is not None and not isinstance(items, list):
        raise DataError(f"{path}: results: expected the list of per-probe results, got "
                        f"{type(items).__name__}")
    metrics, facts = {}, {}
    counts = {k: 0 for k in levels}
    subjects = set()
    for i, item in enumerate(items or []):
        if not isinstance(item, dict) or str(item.get("level")) not in map(str, levels):
            raise DataError(f"{path}: results[{i}]: expected a probe with level in {levels}, "
                            f"got {item if not isinstance(item, dict) else item.get('level')!r}")
        counts[int(item["level"])] += 1
        if item.get("subject"):
            subjects.add(str(item["subject"]))
    for k in levels:
        column = f"{kind}_l{k}_rouge_l_r"
        metrics[column] = float(scores[k])
        facts[column] = MetricFact("[0, 1]", higher, f"RWKU {kind} level {k}: mean ROUGE-L "
                                   f"recall over the level's probes ({about})")
    if items:
        empty = [k for k in levels if counts[k] == 0]
        if empty:
            raise DataError(f"{path}: results has no probe of level(s) {empty}, yet the file "
                            "scores them: the file is inconsistent")
        for k in levels:
            metrics[f"{kind}_l{k}_n"] = counts[k]
            facts[f"{kind}_l{k}_n"] = MetricFact("count", None, f"RWKU {kind} level-{k} probes")
        total = sum(counts.values())
        metrics[f"{kind}_all_rouge_l_r"] = sum(counts[k] * scores[k] for k in levels) / total
        facts[f"{kind}_all_rouge_l_r"] = MetricFact(
            "[0, 1]", higher, f"RWKU {kind}: mean ROUGE-L recall over all probes ({about})")
    return metrics, facts, subjects


def read_run(path: Path) -> tuple[ImportedRun, dict[str, MetricFact]]:
    """One run from its forget.json (and the neighbor.json beside it, when there)."""
    if path.suffix.lower() == ".csv":
        raise DataError(f"{path}: a CSV file, not {WHAT} (a MUSE CSV goes to "
                        "`causalloc import muse`)")
    metrics, facts, subjects = read_levels(path, "forget")
    neighbor = path.with_name("neighbor.json")
    if path.name == "forget.json" and neighbor.is_file():
        more, more_facts, _ = read_levels(neighbor, "neighbor")
        metrics.update(more)
        facts.update(more_facts)
    folder = path.parent
    fields = {"folder": folder.name}
    if subjects:
        fields["target"] = "+".join(sorted(subjects))
    return ImportedRun(run_id=str(path), name=str(folder), fields=fields, metrics=metrics,
                       source=str(path)), facts


def import_runs(paths: list[str | Path], condition_from: str,
                blocks: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The run table of the RWKU results in ``paths`` (forget.json files, or folders
    searched for them); ``frame.attrs["facts"]``."""
    files = find_files(paths, lambda p: p.name == "forget.json", "RWKU forget.json")
    runs, facts = [], {}
    for path in files:
        run, run_facts = read_run(path)
        runs.append(run)
        facts.update(run_facts)
    frame = build_table(runs, condition_from, blocks or {}, "rwku")
    frame.attrs["facts"] = facts
    frame.attrs["warnings"] = []
    return frame
