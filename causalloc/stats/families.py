"""Declared families of hypotheses: which comparisons are adjusted together, and why.

Default families (``families`` in docs/analysis_json.md):

- ``primary``: every primary condition vs ``random`` in every cell of the primary metric
  (the first analysed metric unless ``primary_metric`` says otherwise). Primary conditions
  are the ``attributed*`` ones, else those of unknown kind (``given``), unless ``primary``
  lists them. Without a ``random`` condition, the primary metric's comparisons of those
  conditions; if that is empty too, every comparison of the primary metric.
- ``controls | <primary metric>``: the other comparisons of the primary metric (oracle,
  disjoint, layer-matched, ... vs random; attributed vs its controls).
- ``secondary | <metric>``: every comparison of each other metric, across cells.

A ``family`` named in a spec's ``[[comparisons]]`` entry replaces the default (a family
named ``primary`` joins the primary family). ``family_split`` lists cell columns that
split every family (e.g. one primary family per model); listing all cell columns gives one
family per (metric, cell), which controls nothing across cells.

Each family is adjusted on its own (Holm: family-wise error rate <= alpha within the
family; BH: false discovery rate <= alpha), the sign-flip / randomization p and the TOST p
alike. Families are not adjusted against each other: a verdict outside the primary family
is a secondary finding, and the report says so.
"""

from __future__ import annotations

from causalloc.errors import SpecError
from causalloc.vocab import PRIMARY, is_primary_family

#: condition kinds whose comparisons vs random are primary by default, in order of preference
PRIMARY_KINDS = ("attributed", "given")
#: error rate each adjustment controls within a family
ERROR_RATES = {"holm": "family-wise error rate (Holm)", "fdr_bh": "false discovery rate (BH)"}


def primary_conditions(records: list[dict], kinds: dict, baseline: str,
                       declared: list[str] | None) -> set[str]:
    """Conditions whose comparisons vs ``baseline`` are primary (see the module docstring)."""
    compared = {r["a"] for r in records}
    if declared:
        unknown = [c for c in declared if c not in compared]
        if unknown:
            raise SpecError(
                f"primary: condition(s) {unknown} are not the 'a' side of any comparison "
                f"(compared: {sorted(compared)})"
            )
        return set(declared)
    for kind in PRIMARY_KINDS:
        chosen = {c for c in compared if kinds.get(c, ("given",))[0] == kind}
        if any(r["a"] in chosen and r["b"] == baseline for r in records):
            return chosen
    return set()


def assign_families(records: list[dict], kinds: dict, *, baseline: str, primary_metric: str,
                    declared_primary: list[str] | None, split: list[str]) -> list[str]:
    """The family name of each record (dicts with a, b, metric, cell and optional family)."""
    chosen = primary_conditions(records, kinds, baseline, declared_primary)
    has_baseline = any(r["b"] == baseline for r in records)

    def is_primary(record) -> bool:
        if record["metric"] != primary_metric:
            return False
        if not chosen:
            return True
        return record["a"] in chosen and (record["b"] == baseline or not has_baseline)

    names = []
    for record in records:
        if record.get("family"):
            name = record["family"]
        elif is_primary(record):
            name = PRIMARY
        elif record["metric"] == primary_metric:
            name = f"controls | {record['metric']}"
        else:
            name = f"secondary | {record['metric']}"
        parts = [f"{c}={record['cell'][c]}" for c in split if c in record["cell"]]
        names.append(" | ".join([name, *parts]))
    if declared_primary and not any(is_primary_family(n) for n in names):
        raise SpecError(
            f"primary: {declared_primary} vs {baseline!r} on {primary_metric!r} is not among "
            "the comparisons"
        )
    return names


def min_p_adjusted(floors, adjust: str) -> float:
    """Smallest adjusted p a family can reach, from the p floor of each member test.

    Holm: the smallest p is multiplied by the family size m at the first step, so the best
    reachable adjusted p is m * min(floor) (capped at 1). BH: when every p sits at its
    floor the adjusted p's are the largest floor (m p_(m) / m), the best case of the
    smallest one being min over i of max_{j >= i} m floor_(j) / j, computed exactly.
    """
    floors = sorted(float(f) for f in floors)
    m = len(floors)
    if not m:
        return float("nan")
    if adjust == "holm":
        return min(1.0, m * floors[0])
    return min(1.0, min(m * floors[j] / (j + 1) for j in range(m)))


def describe_families(families, adjust: str, alpha: float, floors=None) -> list[dict]:
    """One entry per family for analysis.json: name, role, size, adjustment, error rate,
    and whether any rejection is reachable at this size (``min_p_adj``, ``can_reject``;
    ``floors``: each comparison's smallest attainable p, see
    :func:`causalloc.stats.power.p_floor`)."""
    out = []
    for name, size in families.value_counts(sort=False).items():
        role = "primary" if is_primary_family(name) else "secondary"
        entry = {"name": name, "role": role, "n_comparisons": int(size), "adjust": adjust,
                 "controls": f"{ERROR_RATES[adjust]} <= {alpha:g} within the family"}
        if floors is not None:
            entry["min_p_adj"] = min_p_adjusted(floors[families == name], adjust)
            entry["can_reject"] = bool(entry["min_p_adj"] < alpha)
        out.append(entry)
    return sorted(out, key=lambda family: family["role"] != "primary")
