"""Drift of a dataset version against a baseline version, column by column.

Numbers: the two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) and the
population stability index over the baseline's deciles. Categories: the
chi-square test of homogeneity (scipy.stats.chi2_contingency), the
Jensen-Shannon distance (scipy.spatial.distance.jensenshannon, base 2, so 0..1)
and PSI over the categories. A column drifts when a figure crosses a threshold
of spec.drift (maxPsi, maxKs, maxJensenShannon, and minPValue when set).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from .schema import parse_numbers

#: Added to empty bins so PSI stays finite (a common convention).
EPSILON = 1e-4
BINS = 10
DEFAULT_THRESHOLDS = {"maxPsi": 0.2, "maxKs": 0.2, "maxJensenShannon": 0.1}


def finite(value: Any) -> float | None:
    """A float for JSON: None where scipy gives NaN or infinity (degenerate samples)."""
    return float(value) if value is not None and np.isfinite(value) else None


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins of proportions (both smoothed by EPSILON)."""
    e = np.clip(expected / max(expected.sum(), 1), EPSILON, None)
    a = np.clip(actual / max(actual.sum(), 1), EPSILON, None)
    return float(np.sum(rel_entr(a, e) + rel_entr(e, a)))


def numeric_drift(base: pd.Series, cur: pd.Series) -> dict[str, Any]:
    b = parse_numbers(base).dropna().to_numpy(dtype=float)
    c = parse_numbers(cur).dropna().to_numpy(dtype=float)
    if len(b) == 0 or len(c) == 0:
        return {"kind": "number", "test": "ks", "skipped": "no values on one side"}
    ks = stats.ks_2samp(b, c)
    edges = np.unique(np.quantile(b, np.linspace(0, 1, BINS + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if len(edges) < 3:  # a constant baseline: one bin below/at the value, one above
        edges = np.array([-np.inf, float(b[0]), np.inf])
    return {
        "kind": "number", "test": "ks",
        "statistic": finite(round(float(ks.statistic), 6)), "pValue": finite(ks.pvalue),
        "psi": round(psi(np.histogram(b, edges)[0].astype(float), np.histogram(c, edges)[0].astype(float)), 6),
        "baselineMean": float(b.mean()), "mean": float(c.mean()),
    }


def categorical_drift(base: pd.Series, cur: pd.Series) -> dict[str, Any]:
    b, c = base.fillna("<null>").astype(str), cur.fillna("<null>").astype(str)
    cats = sorted(set(b) | set(c))
    bc = b.value_counts().reindex(cats, fill_value=0).to_numpy(dtype=float)
    cc = c.value_counts().reindex(cats, fill_value=0).to_numpy(dtype=float)
    out: dict[str, Any] = {"kind": "category", "test": "chi2", "categories": len(cats)}
    out["jensenShannon"] = round(float(jensenshannon(bc / bc.sum(), cc / cc.sum(), base=2)), 6) if bc.sum() and cc.sum() else None
    out["psi"] = round(psi(bc, cc), 6)
    if len(cats) > 1:
        table = np.vstack([bc, cc])
        table = table[:, table.sum(axis=0) > 0]
        chi2, p, _, _ = stats.chi2_contingency(table)
        out["statistic"], out["pValue"] = finite(round(float(chi2), 6)), finite(p)
    else:
        out["statistic"], out["pValue"] = 0.0, 1.0
    new = sorted(set(c) - set(b))
    if new:
        out["newCategories"] = new[:10]
    return out


def compare(baseline: pd.DataFrame, current: pd.DataFrame, types: dict[str, str], skip: set[str],
            thresholds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-column drift figures and which columns cross the thresholds."""
    limits = {**DEFAULT_THRESHOLDS, **{k: v for k, v in (thresholds or {}).items() if v is not None}}
    columns = []
    for name, type_ in types.items():
        if name in skip or name not in baseline.columns:
            continue
        if type_ in ("number", "integer"):
            figures = numeric_drift(baseline[name], current[name])
        elif type_ == "timestamp":
            continue  # time moves on by design: comparing it is not drift
        else:
            if current[name].nunique() > max(50, len(current) // 2):
                continue  # free text or an identifier: category tests say nothing
            figures = categorical_drift(baseline[name], current[name])
        crossed = []
        if figures.get("psi") is not None and figures["psi"] > limits["maxPsi"]:
            crossed.append(f"PSI {figures['psi']:.3f} > {limits['maxPsi']:g}")
        if figures["kind"] == "number" and figures.get("statistic") is not None and figures["statistic"] > limits["maxKs"]:
            crossed.append(f"KS {figures['statistic']:.3f} > {limits['maxKs']:g}")
        if figures.get("jensenShannon") is not None and figures["jensenShannon"] > limits["maxJensenShannon"]:
            crossed.append(f"JS {figures['jensenShannon']:.3f} > {limits['maxJensenShannon']:g}")
        if limits.get("minPValue") is not None and figures.get("pValue") is not None and figures["pValue"] < limits["minPValue"]:
            crossed.append(f"p {figures['pValue']:.2g} < {limits['minPValue']:g}")
        columns.append({"column": name, **figures, "drifted": bool(crossed), "crossed": crossed})
    drifted = [c["column"] for c in columns if c["drifted"]]
    return {"thresholds": limits, "columns": columns, "driftedColumns": drifted, "detected": bool(drifted),
            "baselineRows": int(len(baseline)), "rows": int(len(current))}
