"""Models across cells: a linear mixed model per metric, and dose-response regressions."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

#: block columns treated as random effects (besides the replicate) when they vary
RANDOM_FACTORS = ("data", "split", "forget_split")

MIXED_COLUMNS = [
    "metric", "formula", "term", "contrast", "estimate", "ci95_lo", "ci95_hi", "p", "n_obs",
    "converged", "warnings", "method",
]
DOSE_COLUMNS = [
    "metric", "predictor", "condition", "cell", "formula", "slope", "ci95_lo", "ci95_hi", "p",
    "n", "points",
]


def _safe(name: str) -> str:
    """A formula-safe column name (patsy needs identifiers)."""
    safe = re.sub(r"\W", "_", str(name))
    return safe if safe and not safe[0].isdigit() else f"v_{safe}"


def _warning_text(caught) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def mixed_model(
    data: pd.DataFrame,
    *,
    metric: str,
    condition: str,
    reference: str,
    replicate: str,
    block_columns: list[str],
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Condition effects pooled across cells by a linear mixed model (statsmodels MixedLM).

    ``data`` holds one row per (block, condition) (K random draws already averaged).
    Model: metric ~ C(condition, Treatment(reference)) + C(x) for every other block
    column x that varies (algorithm, model, budget, ...), with random intercepts for the
    replicate (seed) and, when present and varying, the data split (Laird & Ware 1982;
    the notes' metric ~ condition + algorithm + (1 | seed) + (1 | split)). One random
    factor: ``groups`` = that factor; several: crossed effects as variance components of
    one constant group (``vc_formula``, re_formula "0"), the statsmodels recipe.
    Fitted by REML. Every warning raised during the fit (ConvergenceWarning, boundary
    fits) is returned in ``warnings``; none is silenced. One row per non-reference
    condition with the contrast ``condition - reference`` and its Wald CI.
    """
    rename = {metric: "y", condition: "condition"}
    rename.update({c: _safe(c) for c in block_columns})
    frame = data[[metric, condition, *block_columns]].rename(columns=rename).dropna(subset=["y"])
    random = [c for c in (replicate, *RANDOM_FACTORS) if c in block_columns]
    random = [c for c in dict.fromkeys(random) if frame[_safe(c)].nunique() > 1]
    if not random:
        return pd.DataFrame(columns=MIXED_COLUMNS)
    fixed = [
        _safe(c) for c in block_columns if c not in random and frame[_safe(c)].nunique() > 1
    ]
    terms = [f"C(condition, Treatment(reference={reference!r}))", *[f"C({c})" for c in fixed]]
    formula = "y ~ " + " + ".join(terms)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if len(random) == 1:
            model = smf.mixedlm(formula, frame, groups=frame[_safe(random[0])])
        else:
            vc = {_safe(c): f"0 + C({_safe(c)})" for c in random}
            model = smf.mixedlm(
                formula, frame.assign(_all=1), groups="_all", vc_formula=vc, re_formula="0"
            )
        result = model.fit(reml=True)
    shown_formula = formula.replace("y ~", f"{metric} ~", 1) + "".join(
        f" + (1 | {c})" for c in random
    )
    ci = result.conf_int(alpha=1 - ci_level)
    rows = []
    prefix = terms[0] + "[T."
    for term in result.params.index:
        if not term.startswith(prefix):
            continue
        level = term[len(prefix):-1]
        rows.append(
            {
                "metric": metric,
                "formula": shown_formula,
                "term": term,
                "contrast": f"{level} - {reference}",
                "estimate": float(result.params[term]),
                "ci95_lo": float(ci.loc[term, 0]),
                "ci95_hi": float(ci.loc[term, 1]),
                "p": float(result.pvalues[term]),
                "n_obs": int(result.nobs),
                "converged": bool(result.converged),
                "warnings": _warning_text(caught),
                "method": "REML",
            }
        )
    return pd.DataFrame(rows, columns=MIXED_COLUMNS)


def _points(x: pd.Series, y: pd.Series, ci_level: float) -> list[dict]:
    """Mean of y with a t CI at each distinct x (rounded to 3 decimals) for plotting."""
    from scipy import stats

    out = []
    for value, group in y.groupby(x.round(3)):
        n = int(group.size)
        mean = float(group.mean())
        if n > 1:
            half = stats.t.ppf((1 + ci_level) / 2, n - 1) * group.std(ddof=1) / np.sqrt(n)
        else:
            half = np.nan
        out.append({"x": float(value), "mean": mean, "lo": mean - half, "hi": mean + half, "n": n})
    return out


def dose_response(
    data: pd.DataFrame,
    *,
    metric: str,
    predictor: str,
    x_column: str,
    replicate: str,
    ci_level: float = 0.95,
    condition: str | None = None,
    cell: dict | None = None,
) -> dict | None:
    """OLS slope of a metric on a dose (budget, or overlap with the oracle mask).

    Model: metric ~ x + C(replicate) when the replicate varies (the slope is estimated
    within seeds, which removes seed-level shifts shared by the runs of a block), else
    metric ~ x; statsmodels OLS with its t-based CI. Returns None when x has fewer than
    2 distinct values or there are too few runs to estimate the slope.
    """
    frame = pd.DataFrame(
        {"y": data[metric].to_numpy(float), "x": data[x_column].to_numpy(float),
         "rep": data[replicate].to_numpy()}
    ).dropna()
    if frame["x"].nunique() < 2:
        return None
    formula = "y ~ x + C(rep)" if frame["rep"].nunique() > 1 else "y ~ x"
    n_params = 2 + (frame["rep"].nunique() - 1 if "C(rep)" in formula else 0)
    if len(frame) <= n_params:
        return None
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = smf.ols(formula, frame).fit()
    ci = result.conf_int(alpha=1 - ci_level)
    return {
        "metric": metric,
        "predictor": predictor,
        "condition": condition,
        "cell": cell or {},
        "formula": f"{metric} ~ {x_column}" + (f" + C({replicate})" if "rep" in formula else ""),
        "slope": float(result.params["x"]),
        "ci95_lo": float(ci.loc["x", 0]),
        "ci95_hi": float(ci.loc["x", 1]),
        "p": float(result.pvalues["x"]),
        "n": int(result.nobs),
        "points": _points(frame["x"], frame["y"], ci_level),
    }
