"""The index of the committed reports (reports/README.md), written from the analyses.

Prose comes from a committed template (``reports/README.template.md``); every number and
count comes from the report folders' files, so the index cannot drift from them:

- ``{{table}}``: one row per folder: what it asks (the report's question, or the first
  heading of its README when it holds no analysis), its size (seeds, runs and random draws
  per block, from analysis.json and runs.csv), how to regenerate it (``reports/regenerate.sh
  NAME`` when ``analyses/NAME.toml`` exists, else the design command analysis.json records)
  and links to the files it holds besides the standard ones;
- ``{{answers}}``: per analysis, its question and the ``**Answer:**`` paragraph its report
  opens with (``causalloc.report.answer``), with the families that cannot reject at their
  size;
- ``{{answer:NAME}}``, ``{{question:NAME}}``: one folder's answer or question, for prose
  written around them.

The written file's first line names the command that wrote it. Only files that exist are
linked, so every link resolves in the committed folder.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from causalloc.errors import DataError
from causalloc.report.answer import answer_paragraph, family_limits, report_question
from causalloc.report.inputs import load_inputs
from causalloc.report.text import plural

TEMPLATE_NAME = "README.template.md"
INDEX_NAME = "README.md"
#: files every analysed report folder holds (reports/regenerate.sh copies them); the index
#: links the others
STANDARD_FILES = {"report.md", "analysis.json", "comparisons.csv", "runs.csv", "design.json",
                  "tables.tex", "figures", "report.html", "masks"}
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)(?::([A-Za-z0-9_.-]+))?\s*\}\}")


def index_command(reports_dir: Path, template: Path, out: Path) -> str:
    """The ``causalloc index`` command line that writes ``out``, with paths relative to the
    repository root (the folder above ``reports_dir``) and defaults left out."""
    root = reports_dir.resolve().parent

    def show(path: Path) -> str:
        path = path.resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    parts = ["causalloc index", show(reports_dir)]
    if template.resolve() != (reports_dir / TEMPLATE_NAME).resolve():
        parts += ["--template", show(template)]
    if out.resolve() != (reports_dir / INDEX_NAME).resolve():
        parts += ["--out", show(out)]
    return " ".join(parts)


def _readme_heading(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.parent.name


def _link(folder: Path, reports_dir: Path, name: str) -> str:
    target = folder / name
    suffix = "/" if target.is_dir() else ""
    return f"[{name}{suffix}]({folder.name}/{name}{suffix})"


def folder_entry(folder: Path, reports_dir: Path) -> dict | None:
    """What the index says about one report folder; None for a folder with neither
    analysis.json nor README.md."""
    readme = folder / "README.md"
    analysis_path = folder / "analysis.json"
    root = reports_dir.resolve().parent
    entry = {"name": folder.name, "folder": f"[{folder.name}/]({folder.name}/)",
             "readme": _link(folder, reports_dir, "README.md") if readme.is_file() else "",
             "question": None, "answer": None, "limits": [], "size": "", "regenerate": "",
             "also": []}
    if analysis_path.is_file():
        inputs = load_inputs(folder)
        analysis = inputs.analysis
        entry["question"] = report_question(inputs)
        entry["answer"] = answer_paragraph(inputs).removeprefix("**Answer:** ")
        entry["limits"] = [line.removeprefix("† ") for line in family_limits(inputs)]
        seeds = (analysis.get("reproducibility") or {}).get("seeds") or []
        runs = len(inputs.runs) if inputs.runs is not None else inputs.input_spec.get("n_rows")
        k_random = (analysis.get("setup") or {}).get("k_random")
        size = [plural(len(seeds), "seed")]
        if isinstance(runs, int):
            size.append(plural(runs, "run"))
        if isinstance(k_random, int):
            size.append(f"K = {k_random}")
        size.append(plural(len(inputs.comparisons), "comparison"))
        entry["size"] = ", ".join(size)
        spec = root / "analyses" / f"{folder.name}.toml"
        design_command = (analysis.get("reproducibility") or {}).get("design_command")
        if spec.is_file():
            entry["regenerate"] = (f"`reports/regenerate.sh {folder.name}` "
                                   f"([spec](../analyses/{folder.name}.toml))")
        elif design_command:
            entry["regenerate"] = f"`{design_command}`"
    elif readme.is_file():
        entry["question"] = _readme_heading(readme)
    else:
        return None
    extra = sorted(p.name for p in folder.iterdir()
                   if p.name not in STANDARD_FILES | {"README.md"} and not p.name.startswith("."))
    entry["also"] = [_link(folder, reports_dir, name) for name in extra]
    if (folder / "report.md").is_file() and not analysis_path.is_file():
        entry["also"].insert(0, _link(folder, reports_dir, "report.md"))
    return entry


def index_entries(reports_dir: str | Path) -> list[dict]:
    """One entry per report folder of ``reports_dir``, in name order."""
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise DataError(f"{reports_dir}: not a folder of reports")
    entries = [folder_entry(p, reports_dir) for p in sorted(reports_dir.iterdir()) if p.is_dir()]
    return [e for e in entries if e is not None]


def index_table(entries: list[dict]) -> str:
    lines = ["| folder | question | size | regenerate | also |", "|---|---|---|---|---|"]
    for e in entries:
        also = ", ".join(([e["readme"]] if e["readme"] else []) + e["also"])
        question = e["question"] or ""
        lines.append(f"| {e['folder']} | {question} | {e['size']} | {e['regenerate']} | "
                     f"{also} |".replace("|  |", "| |"))
    return "\n".join(lines)


def index_answers(entries: list[dict]) -> str:
    items = []
    for e in (e for e in entries if e["answer"] is not None):
        limits = "".join(f" {line}" for line in e["limits"][:1])
        items.append(f"- **{e['question']}** ({e['folder']}, {e['size']}): {e['answer']}{limits}")
    return "\n".join(items)


def render_index(reports_dir: str | Path, template: str | Path | None = None,
                 command: str | None = None) -> str:
    """The text of reports/README.md: the template with its placeholders filled from the
    report folders, under a first line naming ``command``."""
    reports_dir = Path(reports_dir)
    template = Path(template) if template is not None else reports_dir / TEMPLATE_NAME
    try:
        text = template.read_text()
    except OSError as exc:
        raise DataError(f"{template}: cannot read the index template ({exc.strerror})") from None
    entries = index_entries(reports_dir)
    by_name = {e["name"]: e for e in entries}

    def fill(match: re.Match) -> str:
        key, name = match.group(1), match.group(2)
        if name is None and key == "table":
            return index_table(entries)
        if name is None and key == "answers":
            return index_answers(entries)
        if key in ("answer", "question") and name is not None:
            entry = by_name.get(name)
            if entry is None or entry[key] is None:
                raise DataError(f"{template}: {{{{{key}:{name}}}}}: no report folder "
                                f"{reports_dir / name} with analysis.json")
            return entry[key]
        raise DataError(f"{template}: unknown placeholder {match.group(0)} (known: {{{{table}}}}, "
                        "{{answers}}, {{answer:NAME}}, {{question:NAME}})")

    body = _PLACEHOLDER.sub(fill, text)
    command = command or index_command(reports_dir, template, reports_dir / INDEX_NAME)
    return f"<!-- generated by: {command} -->\n{body}"


def write_index(reports_dir: str | Path, template: str | Path | None = None,
                out: str | Path | None = None) -> Path:
    """Write the index (default ``reports_dir/README.md``) and return its path."""
    reports_dir = Path(reports_dir)
    template = Path(template) if template is not None else reports_dir / TEMPLATE_NAME
    out = Path(out) if out is not None else reports_dir / INDEX_NAME
    text = render_index(reports_dir, template, index_command(reports_dir, template, out))
    out.write_text(text)
    return out


def check_index(reports_dir: str | Path, template: str | Path | None = None,
                out: str | Path | None = None) -> str | None:
    """None when the index file equals what the generator writes now, else a short diff
    summary (the first line that differs)."""
    reports_dir = Path(reports_dir)
    template = Path(template) if template is not None else reports_dir / TEMPLATE_NAME
    out = Path(out) if out is not None else reports_dir / INDEX_NAME
    want = render_index(reports_dir, template, index_command(reports_dir, template, out))
    have = out.read_text() if out.is_file() else ""
    if have == want:
        return None
    diff = list(difflib.unified_diff(have.splitlines(), want.splitlines(), str(out),
                                     "generated", lineterm="", n=0))
    return "\n".join(diff[:12])
