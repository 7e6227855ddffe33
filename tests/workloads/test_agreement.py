"""Loom's agreement figures equal the libraries called directly, on small hand-made data."""
from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from loom.workloads import agreement as agr

A = ["ann", "bob", "cy"]
# 10 items x 3 annotators, labels 0..2, -1 = not labelled
CODES = np.array([
    [0, 0, 0], [1, 1, 1], [2, 2, 1], [0, 1, 0], [1, 1, -1],
    [2, 2, 2], [0, 0, 1], [1, 2, 1], [-1, 0, 0], [2, 2, 2],
])


def test_cohen_pairs_equal_sklearn_on_common_items():
    pairs = agr.cohen_pairs(CODES, A)
    assert [p["annotators"] for p in pairs] == [["ann", "bob"], ["ann", "cy"], ["bob", "cy"]]
    for p, (j, k) in zip(pairs, [(0, 1), (0, 2), (1, 2)]):
        both = (CODES[:, j] >= 0) & (CODES[:, k] >= 0)
        assert p["items"] == both.sum()
        assert p["value"] == pytest.approx(cohen_kappa_score(CODES[both, j], CODES[both, k]), abs=1e-6)
    # by hand, ann/bob on their 9 common items: ann 012012012, bob 012112022 -> po = 7/9;
    # marginals ann 3/3/3, bob 2/3/4 -> pe = (6 + 9 + 12) / 81 = 1/3; kappa = (7/9 - 1/3) / (2/3) = 2/3
    assert pairs[0]["items"] == 9 and pairs[0]["value"] == pytest.approx(2 / 3, abs=1e-6)
    assert agr.cohen(CODES, A)["value"] == pytest.approx(np.mean([p["value"] for p in pairs]), abs=1e-6)


def test_fleiss_equals_statsmodels_on_complete_items():
    complete = (CODES >= 0).all(axis=1)
    table, _ = aggregate_raters(CODES[complete])
    expected = fleiss_kappa(table, method="fleiss")
    got = agr.fleiss(CODES, 3)
    assert got["items"] == 8 and got["value"] == pytest.approx(expected, abs=1e-6)


def test_fleiss_textbook_value():
    # Fleiss (1971)-style worked example from Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    codes = np.array([np.repeat(np.arange(5), row) for row in table])
    assert agr.fleiss(codes, 5)["value"] == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_equals_the_package_with_missing_labels():
    reliability = CODES.T.astype(float)
    reliability[reliability < 0] = np.nan
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    got = agr.krippendorff_alpha(CODES, 3)
    assert got["items"] == 10 and got["value"] == pytest.approx(expected, abs=1e-6)


def test_krippendorff_textbook_value():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: 0.743
    nan = np.nan
    data = np.array([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ])
    codes = np.where(np.isnan(data.T), -1, np.nan_to_num(data.T) - 1).astype(int)
    assert agr.krippendorff_alpha(codes, 5)["value"] == pytest.approx(0.743, abs=5e-4)


def test_per_label_is_one_vs_rest():
    per = agr.per_label(CODES, A, ["a", "b", "c"])
    assert [p["label"] for p in per] == ["a", "b", "c"]
    binary = np.where(CODES >= 0, (CODES == 2).astype(int), -1)
    complete = (binary >= 0).all(axis=1)
    table, _ = aggregate_raters(binary[complete])
    assert per[2]["fleissKappa"] == pytest.approx(fleiss_kappa(table), abs=1e-6)
    rel = binary.T.astype(float)
    rel[rel < 0] = np.nan
    assert per[2]["krippendorffAlpha"] == pytest.approx(krippendorff.alpha(reliability_data=rel, level_of_measurement="nominal"), abs=1e-6)


def test_undefined_figures_are_none_not_nan():
    same = np.zeros((5, 2), dtype=int)
    figs = agr.figures(same, ["a", "b"], ["x"])
    assert figs["cohenKappa"]["value"] is None
    assert figs["fleissKappa"]["value"] is None
    assert figs["krippendorffAlpha"]["value"] is None
    one = np.array([[0, 1]])
    assert agr.fleiss(one, 2)["value"] is None and agr.cohen(one, ["a", "b"])["pairs"][0]["value"] is None


def test_gate_metric_auto():
    assert agr.gate_metric("auto", CODES[:, :2]) == "cohen"
    assert agr.gate_metric("auto", CODES) == "krippendorff"  # some labels missing
    assert agr.gate_metric("auto", CODES[(CODES >= 0).all(axis=1)]) == "fleiss"
    assert agr.gate_metric("fleiss", CODES) == "fleiss"


def test_per_label_keeps_the_most_used_labels():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, (200, 3))
    codes[codes == 7] = 0  # label 7 never used
    per = agr.per_label(codes, A, [f"l{i}" for i in range(8)], limit=5)
    assert len(per) == 5 and "l7" not in [p["label"] for p in per]
    assert [p["label"] for p in per] == sorted(p["label"] for p in per)
