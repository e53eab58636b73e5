"""The causal-testing layer: matched-block comparisons on run tables (never imports torch).

Typical use::

    from causalloc.stats import load_runs, analyze, write_analysis
    table = load_runs("runs/")                      # or a CSV with block/condition/metric names
    result = analyze(table)                         # defaults: every condition vs random, ...
    result.comparisons                              # tidy DataFrame, COMPARISON_COLUMNS
    write_analysis(result, "runs/analysis")         # analysis.json + comparisons.csv

Array-level functions (rows = comparisons, columns = blocks) return DataFrames with
fixed columns, pingouin-style: :func:`sign_flip_test`, :func:`randomization_test`,
:func:`bootstrap_mean_ci`, :func:`paired_effect_sizes`, :func:`prob_improvement`,
:func:`paired_t`, :func:`wilcoxon_signed_rank`, :func:`tost_paired`, :func:`jzs_bf10`,
:func:`adjust_pvalues`, :func:`blocks_needed`, :func:`verdicts`, and
:func:`compare_paired` (all of them at once).
"""

from causalloc.stats.analyze import (
    COMPARISON_COLUMNS,
    AnalysisResult,
    analyze,
    compare_paired,
    default_pairs,
    write_analysis,
)
from causalloc.stats.bayes import jzs_bf10
from causalloc.stats.classical import paired_t, wilcoxon_signed_rank
from causalloc.stats.effects import bootstrap_mean_ci, paired_effect_sizes, prob_improvement
from causalloc.stats.equivalence import tost_paired
from causalloc.stats.mixed import dose_response, mixed_model
from causalloc.stats.multiplicity import adjust_pvalues
from causalloc.stats.permutation import randomization_test, sign_flip_test
from causalloc.stats.power import blocks_needed, power_tost_paired
from causalloc.stats.spec import AnalysisSpec, Comparison, load_spec, parse_spec
from causalloc.stats.table import RunTable, load_runs
from causalloc.stats.verdict import VERDICTS, verdicts
from causalloc.vocab import DEFAULT_SESOI, HIGHER_IS_BETTER

__all__ = [
    "COMPARISON_COLUMNS", "DEFAULT_SESOI", "HIGHER_IS_BETTER", "VERDICTS", "AnalysisResult",
    "AnalysisSpec", "Comparison", "RunTable", "adjust_pvalues", "analyze", "blocks_needed",
    "bootstrap_mean_ci", "compare_paired", "default_pairs", "dose_response", "jzs_bf10",
    "load_runs", "load_spec", "mixed_model", "paired_effect_sizes", "paired_t", "parse_spec",
    "power_tost_paired", "prob_improvement", "randomization_test", "sign_flip_test",
    "tost_paired", "verdicts", "wilcoxon_signed_rank", "write_analysis",
]
