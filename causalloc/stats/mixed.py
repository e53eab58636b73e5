"""Models across cells: the pooled condition effect (a linear mixed model with the block
random intercept and Satterthwaite df) and dose-response regressions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import differentiate, optimize, stats

MIXED_COLUMNS = [
    "metric", "formula", "term", "contrast", "estimate", "se", "df", "t", "ci95_lo", "ci95_hi",
    "p", "n_obs", "n_blocks", "n_replicates", "sd_replicate_condition", "sd_residual",
    "converged", "warnings", "method",
]
DOSE_COLUMNS = [
    "metric", "predictor", "condition", "cell", "formula", "slope", "ci95_lo", "ci95_hi", "p",
    "n", "points",
]
#: the mixed model's fitting method, as analysis.json states it
MIXED_METHOD = "REML on within-block contrasts, Satterthwaite df"
#: theta = sd(group intercept) / sd(residual) is searched on {0} and 10^-3 .. 10^3
_THETA_GRID = np.concatenate([[0.0], np.logspace(-3, 3, 121)])


def _group_summaries(values: np.ndarray, groups: np.ndarray):
    """Per group: count n_s and mean m_s; and the pooled within-group sum of squares W."""
    codes, _ = pd.factorize(groups)
    counts = np.bincount(codes).astype(float)
    means = np.bincount(codes, weights=values) / counts
    within = float(np.sum((values - means[codes]) ** 2))
    return counts, means, within


def _reml_terms(theta, counts, means, within):
    """sum_s u_s, Q and sum_s log(1 + n_s theta^2) of the one-way model, vectorised in theta."""
    theta = np.asarray(theta, dtype=float)[..., None]
    scale = 1.0 + counts * theta**2
    weights = counts / scale
    total = weights.sum(-1)
    beta = (weights * means).sum(-1) / total
    q = within + (weights * (means - beta[..., None]) ** 2).sum(-1)
    return total, q, np.log(scale).sum(-1)


def _reml_deviance(params, counts, means, within):
    """-2 REML log-likelihood, without (N - 1) log(2 pi), at params = (theta, log sigma).

    Model y_i = beta + u_s(i) + e_i, u ~ N(0, theta^2 sigma^2), e ~ N(0, sigma^2), N values
    in groups of n_s with means m_s and pooled within-group sum of squares W. With
    u_s = n_s / (1 + n_s theta^2) and beta_hat = sum u_s m_s / sum u_s (Harville 1977):
    -2 l_R = (N - 1) log sigma^2 + sum log(1 + n_s theta^2) + log sum u_s
             + [W + sum u_s (m_s - beta_hat)^2] / sigma^2.
    """
    total, q, log_scale = _reml_terms(params[0], counts, means, within)
    log_sigma = params[1]
    n_obs = counts.sum()
    return 2 * (n_obs - 1) * log_sigma + log_scale + np.log(total) + q * np.exp(-2 * log_sigma)


def _profiled_deviance(theta, counts, means, within):
    """The REML deviance at sigma^2 = Q / (N - 1), its minimiser for this theta."""
    total, q, log_scale = _reml_terms(theta, counts, means, within)
    n_obs = counts.sum()
    return (n_obs - 1) * np.log(q / (n_obs - 1)) + log_scale + np.log(total)


def _fit_theta(counts, means, within) -> tuple[float, bool]:
    """REML theta >= 0: best grid point, refined by bounded Brent between its neighbours."""
    deviance = _profiled_deviance(_THETA_GRID, counts, means, within)
    best = int(np.argmin(deviance))
    low, high = _THETA_GRID[max(best - 1, 0)], _THETA_GRID[min(best + 1, _THETA_GRID.size - 1)]
    refined = optimize.minimize_scalar(
        lambda t: float(_profiled_deviance(t, counts, means, within)),
        bounds=(low, high), method="bounded", options={"xatol": 1e-10},
    )
    theta = float(refined.x) if refined.fun < deviance[best] else float(_THETA_GRID[best])
    if deviance[0] - min(refined.fun, deviance[best]) < 1e-9:
        theta = 0.0  # the boundary fit, reported as such (lme4 reports theta = 0)
    return theta, bool(refined.success) and best < _THETA_GRID.size - 1


def random_intercept_mean(values, groups, ci_level: float = 0.95) -> dict:
    """Mean of ``values`` under a random group intercept: REML, Satterthwaite df.

    Model values_i = beta + u_group(i) + e_i (one-way random effects, any group sizes).
    theta = sd(u) / sd(e) minimises the REML deviance profiled over sigma
    (sigma^2 = Q / (N - 1)); Var(beta_hat) = V = sigma^2 / sum u_s. Satterthwaite (1946) df
    as lmerTest computes it (Kuznetsova, Brockhoff & Christensen 2017, J. Stat. Softw.
    82(13), eq. 6-7): df = 2 V^2 / (g' A g), g the gradient of V in the variance
    parameters, A = 2 H^-1 their asymptotic covariance, H the Hessian of the REML deviance
    (scipy.differentiate.hessian), in lme4's parameters (theta, sigma) with sigma on the
    log scale (the df does not change: the deviance is stationary in sigma, and even in
    theta at the boundary theta = 0). CI: beta_hat +- t_{df} V^(1/2).
    With fewer than 2 groups, or one value per group, theta is not identifiable and the
    result is the one-sample t-test (df = N - 1; scipy.stats.ttest_1samp).
    Written by hand because statsmodels MixedLM gives no Satterthwaite df and profiles
    sigma out of its likelihood, which the df formula needs as a parameter.
    Returns estimate, se, df, t, p, ci_lo, ci_hi, sd_group (theta sigma; None when not
    fitted), sd_residual (sigma), converged and warnings (a boundary fit, constant data).
    """
    values = np.asarray(values, dtype=float)
    n_obs = values.size
    counts, means, within = _group_summaries(values, np.asarray(groups))
    mean = float(values.mean())
    out = {"estimate": mean, "se": np.nan, "df": np.nan, "t": np.nan, "p": np.nan,
           "ci_lo": np.nan, "ci_hi": np.nan, "sd_group": None, "sd_residual": np.nan,
           "converged": True, "warnings": []}
    sd = float(values.std(ddof=1)) if n_obs > 1 else np.nan
    if not sd / np.sqrt(n_obs) > 10 * np.finfo(float).eps * abs(mean):
        out["warnings"].append(
            f"{n_obs} value(s) essentially constant (sd {sd:.3g}): no test (R stops likewise)"
        )
        return out
    if counts.size < 2 or counts.size == n_obs:
        test = stats.ttest_1samp(values, 0.0)
        ci = test.confidence_interval(ci_level)
        out.update(se=sd / np.sqrt(n_obs), df=float(test.df), t=float(test.statistic),
                   p=float(test.pvalue), ci_lo=float(ci.low), ci_hi=float(ci.high),
                   sd_residual=sd)
        return out
    theta, converged = _fit_theta(counts, means, within)
    total, q, _ = _reml_terms(theta, counts, means, within)
    sigma2 = float(q) / (n_obs - 1)
    variance = sigma2 / float(total)
    weights = counts / (1.0 + counts * theta**2)
    estimate = float(np.sum(weights * means) / total)
    # gradient of V in (theta, log sigma): dV/dtheta = -V (d sum u / d theta) / sum u
    d_total = float(np.sum(-2.0 * counts**2 * theta / (1.0 + counts * theta**2) ** 2))
    gradient = np.array([-variance * d_total / float(total), 2.0 * variance])
    hessian = differentiate.hessian(
        lambda p: _reml_deviance(p, counts, means, within),
        np.array([theta, 0.5 * np.log(sigma2)]), initial_step=0.05,
        tolerances={"atol": 1e-7 * n_obs, "rtol": 1e-7},  # entries are O(N); the cross
    )  # term is 0 at theta = 0, where a purely relative tolerance cannot be met
    try:
        df = float(2 * variance**2 / (gradient @ (2 * np.linalg.inv(hessian.ddf)) @ gradient))
    except np.linalg.LinAlgError:
        df = np.nan
    if not (hessian.success.all() and np.isfinite(df) and df > 0):
        converged = False
        df = np.nan
    se = np.sqrt(variance)
    half = stats.t.ppf((1 + ci_level) / 2, df) * se
    out.update(estimate=estimate, se=se, df=df, t=estimate / se,
               p=float(2 * stats.t.sf(abs(estimate / se), df)), ci_lo=estimate - half,
               ci_hi=estimate + half, sd_group=theta * np.sqrt(sigma2),
               sd_residual=np.sqrt(sigma2), converged=converged)
    if theta == 0.0:
        out["warnings"].append("boundary (singular) fit: group variance estimated as 0")
    if not converged:
        out["warnings"].append("REML fit or Hessian did not converge; df not computed")
    return out


def mixed_model(
    data: pd.DataFrame,
    *,
    metric: str,
    condition: str,
    reference: str,
    replicate: str,
    block_columns: list[str],
    ci_level: float = 0.95,
    cluster: str | None = None,
) -> pd.DataFrame:
    """Each condition's effect against ``reference`` pooled across cells, by a mixed model.

    ``data`` holds one row per (block, condition) (K random draws already averaged; more
    rows are averaged). The model, in lme4 notation, for condition c on the blocks that
    have both c and the reference::

        metric ~ condition + cell + (1 | seed) + (1 | seed:condition) + (1 | cell:seed)

    cell = the block columns other than the replicate (seed), as fixed effects; cell:seed
    = the matched block, with its random intercept; seed:condition lets the condition
    effect vary between seeds (a seed's runs share random masks and data order across
    cells, so its contrasts are correlated; the design-driven random slope of Barr et
    al. 2013). Fitted on the within-block contrasts d_b = y(c, b) - y(reference, b): the
    cell, seed and block intercepts cancel and d_b = beta + v_seed + e_b, with v the
    seed:condition difference (variance 2 sd_seed:condition^2) and e (variance
    2 sd_residual^2), fitted by :func:`random_intercept_mean`. The contrasts are
    independent of the block means, whose expectation holds a free cell effect and so
    no information on beta; the REML likelihood factorises, and beta, its SE and
    Satterthwaite df equal lmerTest's for the full model on the same rows (interior
    variance estimates; tests/reference/ holds the comparison), at a cost linear in
    the rows instead of one fixed effect per cell. With one cell the model is
    metric ~ condition + (1 | seed): the paired t-test. A block lacking c or the
    reference is left out of that contrast (lmer would take inter-block information
    from its single row; matched tables have none). ``sd_*`` are on the metric's scale
    (lme4's VarCorr). One row per non-reference condition, every warning of its fit
    (boundary fit, constant contrasts) in ``warnings``.

    ``cluster`` (``testbed`` for replicated testbeds): blocks nest in clusters, and the effect
    varies between clusters instead of seeds::

        metric ~ condition + cell + (1 | testbed) + (1 | testbed:condition) + (1 | cell:testbed:seed)

    fitted the same way with the contrasts grouped by testbed: the verdict is then about the
    population of testbeds (a testbed intercept alone cancels in the contrasts).
    """
    wide = data.groupby([*block_columns, condition], sort=True)[metric].mean().unstack(condition)
    index = wide.index.to_frame(index=False)
    group = cluster or replicate
    cells = [c for c in block_columns if c not in (replicate, cluster) and index[c].nunique() > 1]
    cell = ":".join(cells)
    block = ":".join([*cells, *([cluster] if cluster else []), replicate])
    rows = []
    for level in wide.columns:
        if level == reference:
            continue
        contrast = (wide[level] - wide[reference]).to_numpy()
        use = np.isfinite(contrast)
        seeds = index[group].to_numpy()[use]
        row = {"metric": metric, "term": f"{condition}{level}",
               "contrast": f"{level} - {reference}", "n_obs": 2 * int(use.sum()),
               "n_blocks": int(use.sum()), "n_replicates": int(pd.unique(seeds).size),
               "method": MIXED_METHOD}
        if use.sum() < 2:
            fit = {"estimate": np.nan, "converged": False,
                   "warnings": [f"{int(use.sum())} block(s) with both conditions, need >= 2"]}
        else:
            fit = random_intercept_mean(contrast[use], seeds, ci_level)
        random = [f"(1 | {block})"] if block != group else [f"(1 | {group})"]
        if fit.get("sd_group") is not None:
            random = [f"(1 | {group})", f"(1 | {group}:{condition})", *random]
        fixed = " + ".join([condition, *([cell] if cell else [])])
        row["formula"] = f"{metric} ~ {fixed} + " + " + ".join(random)
        for key in ("estimate", "se", "df", "t", "p", "converged", "warnings"):
            row[key] = fit.get(key, np.nan)
        row["ci95_lo"], row["ci95_hi"] = fit.get("ci_lo", np.nan), fit.get("ci_hi", np.nan)
        # contrast-scale sds -> metric scale: Var(d) terms are twice lme4's variances
        for key, source in (("sd_replicate_condition", "sd_group"), ("sd_residual", "sd_residual")):
            value = fit.get(source)
            row[key] = None if value is None else float(value) / np.sqrt(2)
        rows.append(row)
    return pd.DataFrame(rows, columns=MIXED_COLUMNS)


def cluster_effects(diffs: np.ndarray, clusters: list | None, ci_level: float = 0.95):
    """``clusters``: each block's cluster as a plain value. Per cluster (testbed) the mean within-block difference, and the effect for the
    population of clusters: ``diff ~ 1 + (1 | cluster)`` on the block contrasts, i.e. the
    model ``metric ~ condition + (1 | cluster) + (1 | cluster:condition) + (1 | cluster:seed)``
    on the block values (:func:`random_intercept_mean`, REML with
    Satterthwaite df), whose interval widens with the between-cluster spread of the effect.
    (None, None) when blocks are not nested in clusters."""
    if clusters is None:
        return None, None
    groups = pd.Series(diffs).groupby(pd.Series(clusters, dtype=object), sort=True)
    by_cluster = [{"cluster": key, "n_blocks": int(len(values)),
                   "mean_diff": float(values.mean())} for key, values in groups]
    fit = random_intercept_mean(diffs, np.asarray(clusters, dtype=object), ci_level)
    model = {key: fit[key] for key in ("estimate", "se", "df", "t", "p", "converged", "warnings")}
    model.update(ci95=[fit["ci_lo"], fit["ci_hi"]], n_clusters=len(by_cluster),
                 sd_cluster_condition=None if fit["sd_group"] is None else fit["sd_group"] / np.sqrt(2),
                 sd_residual=fit["sd_residual"] / np.sqrt(2))
    return by_cluster, model


def _points(groups: np.ndarray, x: np.ndarray, y: np.ndarray, ci_level: float) -> list[list]:
    """Per group: the mean of y with a t CI at each distinct x (rounded to 3 decimals)."""
    summary = (
        pd.DataFrame({"group": groups, "x": np.round(x, 3), "y": y})
        .groupby(["group", "x"], sort=True)["y"].agg(["size", "mean", "std"])
    )
    n = summary["size"].to_numpy()
    mean = summary["mean"].to_numpy()
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf((1 + ci_level) / 2, n - 1) * summary["std"].to_numpy() / np.sqrt(n)
    half = np.where(n > 1, half, np.nan)
    points: list[list] = [[] for _ in range(int(groups.max()) + 1 if groups.size else 0)]
    for (group, value), m, h, k in zip(summary.index, mean, half, n):
        points[group].append({"x": float(value), "mean": float(m), "lo": float(m - h),
                              "hi": float(m + h), "n": int(k)})
    return points


def dose_responses(
    data: pd.DataFrame,
    *,
    metric: str,
    predictor: str,
    x_column: str,
    replicate: str,
    by: list[str] = (),
    condition: str | None = None,
    ci_level: float = 0.95,
) -> list[dict]:
    """OLS slope of a metric on a dose (budget, or overlap with the oracle mask), per group.

    Groups: the columns ``by`` (the cell) and ``condition`` (when given), in order of
    first appearance. Model per group: metric ~ x + C(replicate) (the slope within
    seeds, which removes seed-level shifts shared by the runs of a block; metric ~ x
    when one replicate), with its t-based CI. All groups at once by the
    Frisch-Waugh-Lovell theorem: x and y demeaned within (group, replicate),
    slope = sum x~ y~ / sum x~^2, residual df = n - replicates - 1 (the same numbers as
    statsmodels OLS with replicate dummies, which tests check; a loop of per-group
    fits cost 5-100 ms per group, minutes at 1,500 cells). A group whose x has fewer
    than 2 distinct values, no variation within replicates, or no residual df gets
    no entry.
    """
    keys = [*by, *([condition] if condition else [])]
    frame = pd.DataFrame({"y": data[metric].to_numpy(float), "x": data[x_column].to_numpy(float),
                          "rep": data[replicate].to_numpy()})
    for i, key in enumerate(keys):
        frame[f"key{i}"] = data[key].to_numpy()
    frame = frame.dropna(subset=["y", "x", "rep"])
    key_columns = [f"key{i}" for i in range(len(keys))]
    group = (frame.groupby(key_columns, sort=False).ngroup().to_numpy() if keys
             else np.zeros(len(frame), dtype=int))
    within = frame.groupby([group, frame["rep"].to_numpy()], sort=False).ngroup().to_numpy()
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    counts = np.bincount(within)
    x_tilde = x - (np.bincount(within, weights=x) / counts)[within]
    y_tilde = y - (np.bincount(within, weights=y) / counts)[within]
    n = np.bincount(group)
    group_of_within = np.zeros(counts.size, dtype=int)
    group_of_within[within] = group
    replicates = np.bincount(group_of_within)
    sxx = np.bincount(group, weights=x_tilde**2)
    distinct = frame.groupby(group)["x"].nunique().to_numpy()
    df = n - replicates - 1
    valid = (distinct >= 2) & (df > 0) & (sxx > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.bincount(group, weights=x_tilde * y_tilde) / sxx
        residual = y_tilde - slope[group] * x_tilde
        se = np.sqrt(np.bincount(group, weights=residual**2) / df / sxx)
        half = stats.t.ppf((1 + ci_level) / 2, df) * se
        p = 2 * stats.t.sf(np.abs(slope / se), df)
    points = _points(group, x, y, ci_level)
    first = np.unique(group, return_index=True)[1]
    labels = frame[key_columns].to_numpy()[first] if keys else np.empty((first.size, 0))
    out = []
    for g in np.flatnonzero(valid):
        values = [v.item() if isinstance(v, np.generic) else v for v in labels[g]]
        out.append({
            "metric": metric,
            "predictor": predictor,
            "condition": values[-1] if condition else None,
            "cell": dict(zip(by, values)),
            "formula": f"{metric} ~ {x_column}" + (
                f" + C({replicate})" if replicates[g] > 1 else ""),
            "slope": float(slope[g]),
            "ci95_lo": float(slope[g] - half[g]),
            "ci95_hi": float(slope[g] + half[g]),
            "p": float(p[g]),
            "n": int(n[g]),
            "points": points[g],
        })
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
    """:func:`dose_responses` for one group (``condition`` and ``cell`` are its labels)."""
    rows = dose_responses(data, metric=metric, predictor=predictor, x_column=x_column,
                          replicate=replicate, ci_level=ci_level)
    if not rows:
        return None
    return rows[0] | {"condition": condition, "cell": cell or {}}
