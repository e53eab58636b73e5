"""``causalloc demo``: the whole pipeline on an embedded default design.

Builds the tiny controlled testbed from generated authors, runs matched blocks of oracle,
random, disjoint-from-oracle and attributed (activations, grad x weight) masks under three
objectives (GradDiff, NPO, RMU), analyses the run table and writes the report. The design
is the embedded TOML ``demo.toml`` (``--quick``: ``demo_quick.toml``, fewer seeds and
steps and a smaller testbed, same pipeline).
"""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

DESIGNS = {False: "demo.toml", True: "demo_quick.toml"}


def demo_spec(quick: bool = False):
    """The embedded experiment spec (validated like any user spec)."""
    from causalloc.runs.spec import parse_spec, tomllib

    name = DESIGNS[quick]
    text = resources.files("causalloc.demo_data").joinpath(name).read_text()
    return parse_spec(tomllib.loads(text), source=f"embedded {name}", default_name=Path(name).stem)


def run_demo(out: str | Path, quick: bool = False, workers: int = 2, progress: bool = True,
             log=print) -> dict:
    """Build, run, analyse and report, all into ``out``: the run store and ``runs.csv``,
    ``analysis.json``, ``report.md`` / ``report.html`` / ``tables.tex``, ``figures/`` and
    ``masks/``. Returns the paths and the run summary. Rerunning skips finished runs."""
    from causalloc.report import write_report
    from causalloc.runs import execute_design
    from causalloc.runs.worker import resolve_testbed, save_block_masks
    from causalloc.stats import analyze, load_runs, write_analysis

    out = Path(out)
    start = time.perf_counter()
    spec = demo_spec(quick)
    log(f"[1/4] testbed ({'quick' if quick else 'default'} tiny, generated authors)")
    testbed = resolve_testbed(spec.testbed.to_dict(), progress=progress)
    d = testbed.diagnostics
    log(f"      ES forget theta_r {d['es_forget_theta_r']:.2f} -> theta_o {d['es_forget_theta_o']:.2f}; "
        f"ES retain theta_o {d['es_retain_theta_o']:.2f}; V_tgt {d['n_target_units']} units, norm ratio "
        f"{d['norm_ratio_vtgt']:.2f}, weight-norm precision {d['weight_norm_precision']:.2f}")
    log(f"[2/4] matched runs -> {out}")
    summary = execute_design(spec, out, workers=workers, progress=progress,
                             command=" ".join(["causalloc", "demo", *sys.argv[2:]]))
    save_block_masks(spec, out / "masks")
    log(f"[3/4] analysis -> {out / 'analysis.json'}")
    result = analyze(load_runs(out), command="causalloc demo")
    write_analysis(result, out)
    log(f"[4/4] report -> {out / 'report.md'}")
    paths = write_report(out)
    return {"out": str(out), "report_md": str(paths["report_md"]), "report_html": str(paths["report_html"]),
            "summary": summary, "seconds": round(time.perf_counter() - start, 1)}
