"""Inter-annotator agreement: Cohen's kappa per pair (scikit-learn), Fleiss'
kappa (statsmodels) and Krippendorff's alpha (the ``krippendorff`` package,
nominal), overall and per label (one-vs-rest).

Input is a ratings matrix ``codes`` (items x annotators, label index or -1 for
"not labelled"). Each statistic uses the items it can: Cohen a pair's common
items, Fleiss the items every annotator labelled, Krippendorff every item with
at least two labels (it handles missing labels itself). A statistic that is
undefined on the data (fewer than two usable items, or one label only, where
chance agreement is 1) is ``None``, never NaN.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss_kappa

METRIC_NAMES = {"cohen": "cohen_kappa", "fleiss": "fleiss_kappa", "krippendorff": "krippendorff_alpha"}


def _clean(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


def cohen_pairs(codes: np.ndarray, annotators: list[str]) -> list[dict[str, Any]]:
    """Cohen's kappa for every pair of annotators, on the items both labelled."""
    pairs = []
    for j, k in itertools.combinations(range(codes.shape[1]), 2):
        both = (codes[:, j] >= 0) & (codes[:, k] >= 0)
        n = int(both.sum())
        value = None
        if n >= 2:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one label only: undefined, reported as None
                value = _clean(cohen_kappa_score(codes[both, j], codes[both, k]))
        pairs.append({"annotators": [annotators[j], annotators[k]], "value": value, "items": n})
    return pairs


def cohen(codes: np.ndarray, annotators: list[str]) -> dict[str, Any]:
    """Mean of the defined pairwise kappas, with every pair."""
    pairs = cohen_pairs(codes, annotators)
    defined = [p["value"] for p in pairs if p["value"] is not None]
    labelled_by_two = int(((codes >= 0).sum(axis=1) >= 2).sum())
    return {
        "value": round(float(np.mean(defined)), 6) if defined else None,
        "items": labelled_by_two,
        "pairs": pairs,
    }


def category_counts(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """items x classes: how many annotators gave each label (statsmodels' aggregate_raters, vectorised)."""
    counts = np.zeros((codes.shape[0], n_classes), dtype=np.int64)
    rows, cols = np.nonzero(codes >= 0)
    np.add.at(counts, (rows, codes[rows, cols]), 1)
    return counts


def fleiss(codes: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Fleiss' kappa on the items every annotator labelled."""
    complete = (codes >= 0).all(axis=1)
    n = int(complete.sum())
    if n < 2 or codes.shape[1] < 2:
        return {"value": None, "items": n}
    with np.errstate(all="ignore"):
        value = _fleiss_kappa(category_counts(codes[complete], n_classes), method="fleiss")
    return {"value": _clean(value), "items": n}


def krippendorff_alpha(codes: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Krippendorff's alpha, nominal, on every item with two labels or more."""
    pairable = (codes >= 0).sum(axis=1) >= 2
    n = int(pairable.sum())
    if n < 1:
        return {"value": None, "items": n}
    # krippendorff takes "value counts" (items x values): the same as Fleiss' table,
    # which skips its own O(items x annotators) conversion.
    counts = category_counts(codes[pairable], n_classes)
    if (counts.sum(axis=0) > 0).sum() < 2:
        return {"value": None, "items": n}  # one label only: expected disagreement is 0
    with np.errstate(all="ignore"):
        value = krippendorff.alpha(value_counts=counts, level_of_measurement="nominal")
    return {"value": _clean(value), "items": n}


def overall(codes: np.ndarray, annotators: list[str], n_classes: int) -> dict[str, Any]:
    return {
        "cohenKappa": cohen(codes, annotators),
        "fleissKappa": fleiss(codes, n_classes),
        "krippendorffAlpha": krippendorff_alpha(codes, n_classes),
    }


MAX_LABELS = 50


def per_label(codes: np.ndarray, annotators: list[str], classes: list[str], limit: int = MAX_LABELS) -> list[dict[str, Any]]:
    """One-vs-rest: for each label, agreement on "this label or not". With more than
    ``limit`` labels, the ``limit`` most used ones (each costs a full pass of every statistic)."""
    used = np.bincount(codes[codes >= 0], minlength=len(classes))
    chosen = sorted(np.argsort(-used, kind="stable")[:limit].tolist())
    out = []
    for c in chosen:
        label = classes[c]
        binary = np.where(codes >= 0, (codes == c).astype(np.int64), -1)
        figures = overall(binary, annotators, 2)
        out.append({
            "label": label,
            "cohenKappa": figures["cohenKappa"]["value"],
            "fleissKappa": figures["fleissKappa"]["value"],
            "krippendorffAlpha": figures["krippendorffAlpha"]["value"],
        })
    return out


def figures(codes: np.ndarray, annotators: list[str], classes: list[str]) -> dict[str, Any]:
    """Every figure, overall and per label (the status' agreementFigures, the label card's agreement)."""
    out = overall(codes, annotators, len(classes))
    out["perLabel"] = per_label(codes, annotators, classes)
    return out


def gate_metric(metric: str, codes: np.ndarray) -> str:
    """The statistic the gate uses: ``auto`` is cohen for two annotators, fleiss
    when every annotator labelled every item, else krippendorff (missing labels)."""
    if metric != "auto":
        return metric
    if codes.shape[1] == 2:
        return "cohen"
    return "fleiss" if bool((codes >= 0).all()) else "krippendorff"


def gate_value(figs: dict[str, Any], metric: str) -> tuple[str, float | None]:
    name = METRIC_NAMES[metric]
    key = {"cohen": "cohenKappa", "fleiss": "fleissKappa", "krippendorff": "krippendorffAlpha"}[metric]
    return name, figs[key]["value"]
