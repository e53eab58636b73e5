"""Paper figures, one public function per figure, each returning a matplotlib Figure.

Functions that need only analysis.json take the analysis dict; those that need per-run values
(trade-off curves, paired slopes, the random-mask null) also take the run table. A function
whose data are absent raises DataError saying what is missing; ``build_figures`` turns that
into a skipped-figure note. Figures are built on ``matplotlib.figure.Figure`` directly (no
pyplot state), so they render with the Agg canvas on any machine.

Every interval drawn across seeds is a t interval of the mean,
mean +- t_{0.975, n-1} * sd / sqrt(n) (scipy.stats.t), computed after averaging the K
random-mask draws within each block so that n counts blocks, as in the analysis.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon
from matplotlib.ticker import AutoMinorLocator
from scipy import stats

from causalloc.errors import DataError
from causalloc.frontier import frontier
from causalloc.report.inputs import ReportInputs
from causalloc.report.localization import flat_units, jaccard, signature
from causalloc.report.style import (
    DOUBLE_COLUMN,
    SINGLE_COLUMN,
    condition_order,
    condition_styles,
    pair_color,
    paper_style,
)
from causalloc.report.text import (
    cell_signs,
    fmt_interval,
    fmt_p,
    fmt_sig,
    is_number,
    signs_differ,
)
from causalloc.vocab import cell_label, metric_label, random_group, varying_cell_labels

#: most points of a common step grid for trade-off curves
MAX_GRID_POINTS = 200
#: panels per row in small-multiple figures
PANEL_COLUMNS = 3
#: panels per row of the trade-off figure (square-ish panels, one per algorithm)
TRADEOFF_COLUMNS = 4


@dataclass
class ReportFigure:
    """A drawn figure with the file stem and caption the report uses."""

    name: str
    title: str
    caption: str
    figure: Figure


def _inputs(analysis: dict, runs: pd.DataFrame | None = None) -> ReportInputs:
    return ReportInputs(analysis=analysis, analysis_path=Path("analysis.json"), runs=runs)


def _pick_metric(inputs: ReportInputs, metric: str | None) -> str:
    metric = metric or inputs.headline_metric
    if metric is None:
        raise DataError("analysis.json: no comparison to draw")
    if metric not in inputs.metrics:
        raise DataError(f"analysis.json: no comparison on metric {metric!r} "
                        f"(metrics compared: {', '.join(inputs.metrics)})")
    return metric


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t interval over axis 0, ignoring NaN; lo = hi = mean where n < 2."""
    values = np.asarray(values, dtype=float)
    n = np.sum(np.isfinite(values), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(values, axis=0) if values.size else np.full(values.shape[1:], np.nan)
        sd = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half = np.where(n >= 2, half, 0.0)
    return mean, mean - half, mean + half


def _grid(n_panels: int, width: float = DOUBLE_COLUMN, panel_height: float = 1.9,
          columns: int = PANEL_COLUMNS):
    cols = min(columns, max(n_panels, 1))
    rows = math.ceil(max(n_panels, 1) / cols)
    fig = Figure(figsize=(width if n_panels > 1 else SINGLE_COLUMN, panel_height * rows + 0.3),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _matches(column: pd.Series, value) -> pd.Series:
    """Rows of ``column`` equal to a cell value from JSON (numbers compared numerically, so that
    a CSV's ``1.0`` matches JSON's ``1``)."""
    numeric = pd.to_numeric(column, errors="coerce")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and numeric.notna().all():
        return pd.Series(np.isclose(numeric.to_numpy(dtype=float), float(value)),
                         index=column.index)
    return column.astype(str) == str(value)


def _select_cell(runs: pd.DataFrame, cell: dict) -> pd.DataFrame:
    keep = pd.Series(True, index=runs.index)
    for column, value in cell.items():
        if column not in runs:
            raise DataError(f"runs.csv: no column {column!r} (a cell column of analysis.json)")
        keep &= _matches(runs[column], value)
    return runs[keep]


def _require_columns(runs: pd.DataFrame | None, columns: list[str], figure: str) -> pd.DataFrame:
    if runs is None:
        raise DataError(f"{figure} needs runs.csv, which was not found")
    missing = [c for c in columns if c not in runs]
    if missing:
        raise DataError(f"{figure} needs column(s) {', '.join(missing)} in runs.csv")
    return runs


def _interval(interval) -> tuple[float, float]:
    """(lo, hi) of a stored interval, NaN where null (matplotlib then draws no bar)."""
    lo, hi = (list(interval or []) + [None, None])[:2]
    return (lo if is_number(lo) else np.nan), (hi if is_number(hi) else np.nan)


def _cells(comparisons: list[dict]) -> list[dict]:
    return list({json.dumps(c["cell"], sort_keys=True, default=str): c["cell"]
                 for c in comparisons}.values())


def _titles(cells: list[dict]) -> dict[str, str]:
    """Panel title per cell (keyed by its JSON), naming only what differs between panels."""
    return {json.dumps(cell, sort_keys=True, default=str): label
            for cell, label in zip(cells, varying_cell_labels(cells))}


def _title(titles: dict[str, str], cell: dict) -> str:
    return titles[json.dumps(cell, sort_keys=True, default=str)]


def _block_values(inputs: ReportInputs, runs: pd.DataFrame, metric: str,
                  cell: dict) -> pd.DataFrame:
    """Metric per replicate (rows) and condition (columns) in one cell, averaging the random
    draws of a block as the analysis does."""
    rows = _select_cell(runs, cell)
    values = pd.to_numeric(rows[metric], errors="coerce")
    frame = pd.DataFrame({"replicate": rows[inputs.replicate].to_numpy(),
                          "condition": rows[inputs.condition_column].astype(str).to_numpy(),
                          "value": values.to_numpy()})
    return frame.pivot_table(index="replicate", columns="condition", values="value",
                             aggfunc="mean")


def forest_plot(analysis: dict, metric: str | None = None) -> Figure:
    """The headline: one row per cell and comparison, mean difference (a - b) with its 95% CI,
    a line at 0, the +-SESOI band shaded, and each pooled mixed-model estimate of the metric
    as a diamond spanning its 95% CI, unless the cells' effects of that contrast differ in
    sign: then the row says so and draws no diamond (``text.cell_signs``)."""
    inputs = _inputs(analysis)
    metric = _pick_metric(inputs, metric)
    comparisons = [c for c in inputs.comparisons if c["metric"] == metric]
    titles = _titles(_cells(comparisons))
    pairs = list(dict.fromkeys((c["a"], c["b"]) for c in comparisons))
    pooled = [m for m in analysis.get("mixed_models") or []
              if m.get("metric") == metric and is_number(m.get("estimate"))]
    split = sum(signs_differ(cell_signs(comparisons, m)) for m in pooled)  # two rows each
    n_rows = len(comparisons) + len(pairs) + len(pooled) + split + (1 if pooled else 0)
    sesoi = next((c["sesoi"] for c in comparisons if isinstance(c.get("sesoi"), (int, float))),
                 (analysis.get("policy") or {}).get("sesoi", {}).get(metric))
    with paper_style():
        # wide enough for the longest row label (about 0.05 in per character at 7 pt) next to
        # a plot area of at least 1.6 in, so long condition names never squeeze the plot away
        longest = max([len(f"{a} vs {b}") for a, b in pairs]
                      + [len(f"pooled: {m.get('contrast') or m.get('term')}") for m in pooled]
                      + [len(_title(titles, c["cell"])) + 8 for c in comparisons], default=0)
        width = min(DOUBLE_COLUMN, max(SINGLE_COLUMN, 1.8 + 0.05 * longest))
        fig = Figure(figsize=(width, 0.6 + 0.17 * n_rows), layout="constrained")
        ax = fig.subplots()
        y, ticks, labels, headings = n_rows, [], [], {}
        for index, (a, b) in enumerate(pairs):
            color = pair_color(index)
            y -= 1
            headings[len(ticks)] = color
            ticks.append(y)
            labels.append(f"{a} vs {b}")
            for c in (c for c in comparisons if (c["a"], c["b"]) == (a, b)):
                y -= 1
                lo, hi = _interval(c.get("ci95"))
                ax.errorbar(c["mean_diff"], y, xerr=[[c["mean_diff"] - lo], [hi - c["mean_diff"]]],
                            fmt="o", color=color, ms=3.5, capsize=1.5, lw=1)
                ticks.append(y)
                labels.append(f"{_title(titles, c['cell'])} (n={c['n_blocks']})")
        if pooled:
            y -= 1
            for model in pooled:
                y -= 1
                ticks.append(y)
                contrast = model.get("contrast") or model.get("term")
                signs = cell_signs(comparisons, model)
                if signs_differ(signs):
                    # averaging effects of opposite sign hides both: no diamond, the split
                    labels.append(f"pooled: {contrast}")
                    y -= 1
                    ticks.append(y)
                    labels.append(f"none: signs differ ({signs[0]} of {signs[1]} cells > 0)")
                    continue
                lo, hi = _interval(model.get("ci95"))
                ax.add_patch(Polygon([(lo, y), (model["estimate"], y + 0.3), (hi, y),
                                      (model["estimate"], y - 0.3)], closed=True,
                                     facecolor="0.25", edgecolor="0.25"))
                flag = "" if model.get("converged", True) else " (not converged)"
                labels.append(f"pooled: {contrast}{flag}")
        if isinstance(sesoi, (int, float)) and sesoi > 0:
            ax.axvspan(-sesoi, sesoi, color="0.9", zorder=0, label=f"+-SESOI ({sesoi:g})")
            ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize=6)
        ax.axvline(0, color="0.3", lw=0.7, zorder=1)
        ax.set_yticks(ticks, labels)
        for index, tick_label in enumerate(ax.get_yticklabels()):
            if index in headings:  # the pair names head their group of rows
                tick_label.set_fontweight("bold")
                tick_label.set_color(headings[index])
        ax.set_ylim(y - 0.7, n_rows - 0.3)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.set_xlabel(f"Delta {metric_label(metric)} (a - b), mean and 95% CI")
    return fig


def _trajectory_frame(runs: pd.DataFrame) -> list[dict]:
    parsed = []
    for index, text in runs["trajectory"].items():
        if not isinstance(text, str) or not text.strip():
            continue
        try:
            points = pd.DataFrame(json.loads(text))[["step", "rs", "fs"]].astype(float)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"runs.csv row {index}: column 'trajectory' is not a JSON list of "
                            f'{{"step", "rs", "fs"}} ({exc})') from None
        parsed.append({"index": index, "points": points.sort_values("step")})
    return parsed


def mean_tradeoff(curves: list[tuple[object, pd.DataFrame]]) -> dict:
    """Mean trajectory of one condition and its frontier, from ``(replicate, points)`` per run
    (points: ``step``, ``rs``, ``fs`` sorted by step).

    Each run's RS and FS are linearly interpolated (numpy.interp, holding the end values) onto
    the union of the steps (thinned to MAX_GRID_POINTS); the runs of one block (the K random
    draws) are averaged first, so that each block counts once, as in the analysis, then the
    blocks. The frontier is ``frontier`` of that mean trajectory: its area is the AUES of
    the mean trajectory, which is not the mean of the runs' AUES that the analysis tests
    (the maximum does not commute with the mean).

    Returns steps, rs, fs (the mean trajectory), edges (0 and the sorted distinct RS values)
    and frontier (F on each interval (edges[i], edges[i + 1]]), and n_blocks.
    """
    steps = np.unique(np.concatenate([points["step"].to_numpy() for _, points in curves]))
    if steps.size > MAX_GRID_POINTS:
        steps = np.linspace(steps[0], steps[-1], MAX_GRID_POINTS)
    by_block: dict = {}
    for replicate, points in curves:
        by_block.setdefault(replicate, []).append(np.concatenate([
            np.interp(steps, points["step"], points["rs"]),
            np.interp(steps, points["step"], points["fs"])]))
    mean = np.mean([np.mean(rows, axis=0) for rows in by_block.values()], axis=0)
    rs, fs = mean[:steps.size], mean[steps.size:]
    edges = np.unique(np.r_[0.0, rs])
    return {"steps": steps, "rs": rs, "fs": fs, "edges": edges,
            "frontier": frontier(rs, fs, edges[1:]), "n_blocks": len(by_block)}


def _retain_axis(ax, lowest_rs: float) -> None:
    """x from the lowest RS drawn, rounded down to a tick, to 1, with the widest tick step of
    0.2, 0.1 or 0.05 that still labels 3 ticks; y is FS from 0 to 1 in steps of 0.2."""
    for step in (0.2, 0.1, 0.05):
        low = max(0.0, math.floor(round((lowest_rs - 0.005) / step, 6)) * step)
        if round((1 - low) / step) >= 2:
            break
    ax.set_xlim(low - 0.03 * (1 - low), 1 + 0.03 * (1 - low))
    ax.set_xticks(np.round(np.arange(low, 1 + step / 2, step), 2))
    ax.xaxis.set_minor_locator(AutoMinorLocator(2 if step == 0.2 else 5))
    ax.set_ylim(-0.03, 1.03)
    ax.set_yticks(np.round(np.arange(0, 1.01, 0.2), 1))
    ax.grid(True, which="major", color="0.9", lw=0.4)
    ax.set_axisbelow(True)


def tradeoff_curves(runs: pd.DataFrame, analysis: dict) -> Figure:
    """FS-RS trade-off per cell (one panel per algorithm, budget ...), as in the seed paper:
    per condition, the mean (RS, FS) trajectory over the unlearning checkpoints (thin line,
    small markers at the checkpoints, the start marked) and its frontier
    F(r) = max FS_t over checkpoints with RS_t >= r (thick step line; see ``mean_tradeoff``).
    The lines carry ``gid = "trajectory:<condition>"`` and ``"frontier:<condition>"``.
    """
    inputs = _inputs(analysis, runs)
    runs = _require_columns(inputs.done_runs(), ["trajectory", inputs.replicate,
                                                 inputs.condition_column],
                            "the trade-off figure")
    cells = _cells(inputs.comparisons) or [{}]
    titles = _titles(cells)
    styles = condition_styles(runs[inputs.condition_column].astype(str))
    drawn = set()
    with paper_style():
        fig, axes = _grid(len(cells), columns=TRADEOFF_COLUMNS, panel_height=2.0)
        for ax, cell in zip(axes, cells):
            rows = _select_cell(runs, cell)
            curves = _trajectory_frame(rows)
            if not curves:
                ax.set_title(f"{_title(titles, cell)}: no trajectories", fontsize=7)
                continue
            conditions = rows.loc[[c["index"] for c in curves],
                                  inputs.condition_column].astype(str).to_numpy()
            replicates = rows.loc[[c["index"] for c in curves], inputs.replicate].to_numpy()
            lowest = 1.0
            for condition in condition_order(conditions):
                mean = mean_tradeoff([(replicate, curve["points"]) for curve, replicate, name
                                      in zip(curves, replicates, conditions)
                                      if name == condition])
                style = styles[condition]
                ax.plot(mean["rs"], mean["fs"], color=style["color"], lw=0.6, alpha=0.9,
                        marker=style["marker"], ms=2.2, markevery=max(1, mean["steps"].size // 25),
                        gid=f"trajectory:{condition}")
                ax.step(mean["edges"], np.r_[mean["frontier"][:1], mean["frontier"]],
                        where="pre", color=style["color"], lw=1.5, gid=f"frontier:{condition}")
                ax.plot(mean["rs"][0], mean["fs"][0], "o", ms=5, mfc="white", mec="0.15",
                        mew=0.8, zorder=5)
                lowest = min(lowest, float(np.min(mean["rs"])))
                drawn.add(condition)
            _retain_axis(ax, lowest)
            ax.set_title(_title(titles, cell), fontsize=8)
        if not drawn:
            raise DataError("the trade-off figure needs trajectories in runs.csv "
                            "(column 'trajectory' is empty)")
        for index, ax in enumerate(axes):
            ax.set_xlabel("retain score RS (ES on retain)", fontsize=7)
            if index % TRADEOFF_COLUMNS == 0:
                ax.set_ylabel("forget score FS (1 - ES on forget)", fontsize=7)
        handles = [Line2D([], [], color=styles[c]["color"], lw=1.5, marker=styles[c]["marker"],
                          ms=3, label=c) for c in condition_order(drawn)]
        handles += [Line2D([], [], color="0.45", lw=0.6, marker="o", ms=2.2,
                           label="mean trajectory (markers: checkpoints)"),
                    Line2D([], [], color="0.45", lw=1.5, drawstyle="steps-pre",
                           label="its frontier F(r) (area: AUES)"),
                    Line2D([], [], ls="none", marker="o", ms=5, mfc="white", mec="0.15",
                           label="start (step 0)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=6.5)
    return fig


def _shared_legend(fig: Figure, axes) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
            labels[label] = label
    if handles:
        fig.legend(list(handles.values()), list(labels.values()), loc="outside lower center",
                   ncols=min(4, len(handles)), fontsize=6)


def paired_slopes(runs: pd.DataFrame, analysis: dict, metric: str | None = None) -> Figure:
    """Seed-wise paired slopes per cell: one grey line per block across the compared
    conditions (random draws averaged within the block), condition means with 95% CI."""
    inputs = _inputs(analysis, runs)
    metric = _pick_metric(inputs, metric)
    runs = _require_columns(inputs.done_runs(), [metric, inputs.replicate,
                                                 inputs.condition_column],
                            "the paired-slopes figure")
    comparisons = [c for c in inputs.comparisons if c["metric"] == metric]
    cells = _cells(comparisons)
    titles = _titles(cells)
    styles = condition_styles(x for c in comparisons for x in (c["a"], c["b"]))
    with paper_style():
        fig, axes = _grid(len(cells))
        for ax, cell in zip(axes, cells):
            in_cell = [c for c in comparisons if c["cell"] == cell]
            conditions = condition_order(x for c in in_cell for x in (c["a"], c["b"]))
            table = _block_values(inputs, runs, metric, cell).reindex(columns=conditions)
            x = np.arange(len(conditions))
            for _, block in table.iterrows():
                ax.plot(x, block.to_numpy(dtype=float), color="0.6", lw=0.6, alpha=0.7,
                        zorder=1)
            mean, lo, hi = mean_ci(table.to_numpy(dtype=float))
            for i, condition in enumerate(conditions):
                style = styles[condition]
                ax.errorbar(i, mean[i], yerr=[[mean[i] - lo[i]], [hi[i] - mean[i]]],
                            fmt=style["marker"], color=style["color"], capsize=2, zorder=3)
            ax.set_xticks(x, conditions, rotation=30, ha="right")
            ax.set_xlim(-0.4, len(conditions) - 0.6)
            ax.set_title(f"{_title(titles, cell)} (n={len(table)})", fontsize=7)
            ax.set_ylabel(metric_label(metric))
    return fig


def null_distribution(runs: pd.DataFrame, analysis: dict, metric: str | None = None) -> Figure:
    """The random-mask null per cell: each block's K random-mask values (grey dots) with the
    value of every condition compared against them marked, and the randomization p."""
    inputs = _inputs(analysis, runs)
    metric = _pick_metric(inputs, metric)
    runs = _require_columns(inputs.done_runs(), [metric, inputs.replicate,
                                                 inputs.condition_column],
                            "the null-distribution figure")
    random_names = inputs.random_conditions
    comparisons = [c for c in inputs.comparisons
                   if c["metric"] == metric and c["b"] in random_names]
    if not comparisons:
        raise DataError("the null-distribution figure needs comparisons against random masks "
                        "(none found for metric " + repr(metric) + ")")
    cells = _cells(comparisons)
    titles = _titles(cells)
    styles = condition_styles(x for c in comparisons for x in (c["a"], c["b"]))
    with paper_style():
        fig, axes = _grid(len(cells), panel_height=2.2)
        for ax, cell in zip(axes, cells):
            in_cell = [c for c in comparisons if c["cell"] == cell]
            rows = _select_cell(runs, cell)
            replicates = sorted(rows[inputs.replicate].unique(), key=str)
            position = {r: i for i, r in enumerate(replicates)}
            conditions = rows[inputs.condition_column].astype(str)
            values = pd.to_numeric(rows[metric], errors="coerce")
            for null_name in dict.fromkeys(c["b"] for c in in_cell):
                null = rows[conditions == null_name]
                ax.scatter(values[null.index], null[inputs.replicate].map(position), s=6,
                           color=styles[null_name]["color"], alpha=0.6, lw=0,
                           label=f"{null_name} masks")
            p_values = []
            for c in in_cell:
                observed = rows[conditions == c["a"]]
                style = styles[c["a"]]
                ax.scatter(values[observed.index], observed[inputs.replicate].map(position),
                           marker=style["marker"], s=16, color=style["color"], zorder=3,
                           label=c["a"])
                if isinstance(c.get("p_rand"), (int, float)):
                    p_values.append(f"{c['a']} {c['p_rand']:.2g}")
            ax.set_yticks(range(len(replicates)), [str(r) for r in replicates])
            ax.set_ylabel(inputs.replicate)
            ax.set_xlabel(metric_label(metric))
            ax.set_title(_title(titles, cell) + ("\nrandomization p: " + ", ".join(p_values)
                                                 if p_values else ""), fontsize=7)
        _shared_legend(fig, axes)
    return fig


def dose_response(analysis: dict, predictor: str | None = None) -> Figure:
    """Metric against budget or against the fraction of the mask inside the oracle region:
    per-level means with 95% CI and the fitted slope (intercept = mean(y) - slope * mean(x),
    weighted by each level's n, i.e. the least-squares line through the level means)."""
    entries = [d for d in analysis.get("dose_response") or []
               if predictor is None or d.get("predictor") == predictor]
    if not entries:
        raise DataError("analysis.json has no dose_response entries"
                        + (f" for predictor {predictor!r}" if predictor else ""))
    xlabels = {"budget": "budget (fraction of units)", "overlap": "overlap with oracle mask"}
    with paper_style():
        fig, axes = _grid(len(entries))
        for ax, entry in zip(axes, entries):
            points = pd.DataFrame(entry.get("points") or [])
            if points.empty:
                ax.set_title(f"{cell_label(entry.get('cell') or {})}: no points", fontsize=7)
                continue
            points = points.sort_values("x")
            ax.errorbar(points["x"], points["mean"],
                        yerr=[points["mean"] - points["lo"], points["hi"] - points["mean"]],
                        fmt="o", color=pair_color(0), capsize=2)
            weights = points["n"] if "n" in points else np.ones(len(points))
            x_bar = np.average(points["x"], weights=weights)
            y_bar = np.average(points["mean"], weights=weights)
            slope = entry.get("slope")
            if is_number(slope):
                xs = np.linspace(points["x"].min(), points["x"].max(), 20)
                ax.plot(xs, y_bar + slope * (xs - x_bar), color="0.3", lw=0.8, ls="--")
            ax.set_title(f"{cell_label(entry.get('cell') or {})}\nslope {fmt_sig(slope, 3)} "
                         f"{fmt_interval(entry.get('ci95'))}, {fmt_p(entry.get('p'))}",
                         fontsize=7)
            ax.set_xlabel(xlabels.get(entry.get("predictor"), str(entry.get("predictor"))))
            ax.set_ylabel(metric_label(entry.get("metric", "")))
    return fig


def mask_anatomy(masks: list[dict]) -> Figure:
    """Where the masks sit: units per layer of each mask (a heatmap, one row per mask,
    random-like masks summarised by their mean), and the Jaccard overlap |A & B| / |A | B| between masks (mean over
    members for the random group, excluding a mask with itself).

    ``masks`` are ``causalloc.masks.Mask.to_dict()`` dicts; only those with the most common
    signature (n_layers, n_units) are drawn, since masks of different models cannot overlap.
    """
    if not masks:
        raise DataError("the mask-anatomy figure needs mask files (masks/*.json)")
    common = pd.Series([signature(m) for m in masks]).mode()[0]
    masks = [m for m in masks if signature(m) == common]
    groups: dict[str, list[dict]] = {}
    for mask in masks:
        group = random_group(mask["name"])
        key = f"{group} masks" if group else mask["name"]
        groups.setdefault(key, []).append(mask)
    names = condition_order(groups)
    labels = [f"{name} (n={len(groups[name])})" if len(groups[name]) > 1 else name
              for name in names]
    sets = {name: [flat_units(m) for m in groups[name]] for name in names}
    overlap = np.zeros((len(names), len(names)))
    for i, first in enumerate(names):
        for j, second in enumerate(names):
            scores = [jaccard(a, b)
                      for ia, a in enumerate(sets[first]) for ib, b in enumerate(sets[second])
                      if not (i == j and ia == ib)]
            overlap[i, j] = np.mean(scores) if scores else 1.0
    counts = pd.DataFrame([np.mean([[len(units) for units in m["units"]] for m in groups[name]],
                                   axis=0) for name in names],
                          index=labels, columns=np.arange(common[0]))
    ids = [str(i + 1) for i in range(len(names))]
    n_layers, n = counts.shape[1], len(names)
    # one row per mask, shared by both panels; the overlap panel's columns are numbered so
    # that long condition names are written once, left of the rows
    layer_width = min(0.32 * n_layers, 3.0)
    overlap_width = min(0.3 * n, 3.2)
    with paper_style():
        fig = Figure(figsize=(min(DOUBLE_COLUMN, 2.0 + layer_width + overlap_width + 1.0),
                              0.9 + 0.2 * n), layout="constrained")
        ax_counts, ax_heat = fig.subplots(1, 2, width_ratios=[layer_width, overlap_width],
                                          sharey=False)
        sns.heatmap(counts, ax=ax_counts, cmap="Blues", vmin=0, annot=n_layers <= 12,
                    fmt=".0f", annot_kws={"fontsize": 5.5}, linewidths=0.3, linecolor="white",
                    cbar_kws={"shrink": 0.8})
        ax_counts.set_yticks(np.arange(n) + 0.5, [f"{i}  {label}" for i, label in zip(ids, labels)],
                             rotation=0, fontsize=6)
        ax_counts.set_xlabel("layer")
        ax_counts.set_ylabel("")
        if n_layers > 12:
            step = math.ceil(n_layers / 12)
            ax_counts.set_xticks(np.arange(0, n_layers, step) + 0.5,
                                 [str(i) for i in range(0, n_layers, step)])
        ax_counts.tick_params(axis="x", labelsize=6, rotation=0)
        sns.heatmap(pd.DataFrame(overlap, index=ids, columns=ids), ax=ax_heat, vmin=0, vmax=1,
                    cmap="viridis", annot=n <= 12, fmt=".2f", annot_kws={"fontsize": 5},
                    square=True, linewidths=0.3, linecolor="white",
                    cbar_kws={"label": "Jaccard overlap", "shrink": 0.8})
        ax_heat.tick_params(labelsize=6, rotation=0)
        ax_heat.set_xlabel("mask (row number)")
        ax_heat.set_ylabel("")
        ax_counts.set_title("units per layer (random groups: mean)", fontsize=7)
        ax_heat.set_title("Jaccard overlap between masks", fontsize=7)
    return fig


def layerfit_residuals(layers: pd.DataFrame) -> Figure:
    """Residual fraction of the per-layer least-squares fit (``causalloc layerfit``, the seed
    paper's Figure 1) against layer: the oracle region, and the random regions' mean with
    their range (min to max over draws) as a band and each draw as a dot.

    ``layers``: one row per region, draw and layer with columns ``region`` (``oracle`` /
    ``random``), ``draw``, ``layer``, ``residual_fraction``
    (:data:`causalloc.layerfit.LAYER_COLUMNS`)."""
    missing = {"region", "draw", "layer", "residual_fraction"} - set(layers.columns)
    if missing:
        raise DataError(f"layer fit table lacks column(s) {', '.join(sorted(missing))}")
    if layers.empty:
        raise DataError("layer fit table has no rows")
    regions = condition_order(layers["region"].astype(str))
    styles = condition_styles(regions)
    with paper_style():
        fig = Figure(figsize=(SINGLE_COLUMN, 2.3), layout="constrained")
        ax = fig.subplots()
        for region in regions:
            table = layers[layers["region"].astype(str) == region].pivot_table(
                index="draw", columns="layer", values="residual_fraction", aggfunc="mean")
            values, style = table.to_numpy(dtype=float), styles[region]
            label = f"{region} (mean of {len(table)} draws, range)" if len(table) > 1 else region
            ax.plot(table.columns, np.nanmean(values, axis=0), marker=style["marker"],
                    color=style["color"], label=label)
            if len(table) > 1:
                ax.fill_between(table.columns, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                color=style["color"], alpha=0.2, lw=0)
                ax.scatter(np.tile(table.columns, len(table)), values.ravel(), s=6,
                           color=style["color"], alpha=0.6, lw=0)
        ax.set_xlabel("layer")
        ax.set_ylabel("residual fraction of the fit")
        ax.set_xticks(sorted(layers["layer"].unique()))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
    return fig


def build_figures(inputs: ReportInputs) -> tuple[list[ReportFigure], dict[str, str]]:
    """Draw every figure the inputs allow: (figures, {figure name: why it was skipped})."""
    analysis, runs = inputs.analysis, inputs.runs
    headline = inputs.headline_metric
    plans = [(f"forest_{metric}", f"Forest plot, {metric_label(metric)}",
              (f"Mean difference in {metric_label(metric)} (a - b) per cell with 95% CI; "
              "shaded: +-SESOI; diamonds: pooled mixed-model estimates, drawn only where the "
               "cells agree in sign."),
              lambda metric=metric: forest_plot(analysis, metric))
             for metric in inputs.metrics]
    if not plans:
        plans.append(("forest", "Forest plot", "", lambda: forest_plot(analysis)))
    plans += [
        ("tradeoff", "FS-RS trade-off curves",
         ("Per condition (random draws averaged within each block first), the mean (RS, FS) "
          "trajectory over the unlearning checkpoints (thin line, markers at checkpoints, "
          "open circle: start) and its frontier F(r) = max FS over checkpoints with RS >= r "
          "(thick step line; F = 0 beyond the largest RS). The area under F is the AUES of "
          "the mean trajectory; the tested AUES is the mean of each run's area (forest plot)."),
         lambda: tradeoff_curves(runs, analysis)),
        ("paired_slopes", "Seed-wise paired slopes",
         (f"{metric_label(headline or '')} per block (grey lines) and condition means with "
         "95% CI."), lambda: paired_slopes(runs, analysis)),
        ("null_distribution", "Random-mask null distribution",
         (f"{metric_label(headline or '')} of each block's K random masks (dots) and of the "
         "conditions tested against them (markers)."),
         lambda: null_distribution(runs, analysis)),
        ("dose_response_budget", "Budget dose-response",
         "Per-budget means with 95% CI and the fitted slope.",
         lambda: dose_response(analysis, "budget")),
        ("dose_response_overlap", "Overlap dose-response",
         ("Metric against the fraction of the mask inside the oracle region, with the fitted "
         "slope; a positive slope means locality matters."),
         lambda: dose_response(analysis, "overlap")),
        ("mask_anatomy", "Mask anatomy",
         ("Units per layer of each mask (random masks: mean and range) and Jaccard overlap "
         "between masks."), lambda: mask_anatomy(inputs.masks)),
    ]
    figures, skipped = [], {}
    for name, title, caption, draw in plans:
        try:
            figures.append(ReportFigure(name, title, caption, draw()))
        except DataError as exc:
            skipped[name] = str(exc)
    return figures, skipped
