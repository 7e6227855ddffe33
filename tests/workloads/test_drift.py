"""Drift figures: KS and PSI for numbers, chi-square, Jensen-Shannon and PSI for categories."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from loom.workloads import drift


def data(n, shift=0.0, mix=(0.5, 0.3, 0.2), seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"i{k}" for k in range(n)],
        "x": [str(v) for v in rng.normal(shift, 1, n)],
        "c": list(rng.choice(["a", "b", "c"], n, p=list(mix))),
    }, dtype=object)


TYPES = {"id": "string", "x": "number", "c": "string"}


def test_no_drift_between_samples_of_the_same_distribution():
    report = drift.compare(data(2000, seed=1), data(2000, seed=2), TYPES, {"id"})
    assert not report["detected"], report
    assert [c["column"] for c in report["columns"]] == ["x", "c"]  # the id is skipped
    x = report["columns"][0]
    assert x["test"] == "ks" and x["pValue"] > 0.01 and x["psi"] < 0.1


def test_shifted_numbers_and_categories_drift_with_figures():
    base, cur = data(2000, seed=1), data(2000, shift=1.0, mix=(0.2, 0.3, 0.5), seed=2)
    report = drift.compare(base, cur, TYPES, {"id"})
    assert report["detected"] and report["driftedColumns"] == ["x", "c"]
    x, c = report["columns"]
    expected = stats.ks_2samp(pd.to_numeric(base["x"]), pd.to_numeric(cur["x"]))
    assert abs(x["statistic"] - expected.statistic) < 1e-6 and x["psi"] > 0.2
    assert any("KS" in s for s in x["crossed"]) and any("PSI" in s for s in x["crossed"])
    assert c["test"] == "chi2" and c["pValue"] < 1e-6 and c["jensenShannon"] > 0.1
    assert any("JS" in s for s in c["crossed"])


def test_thresholds_come_from_the_spec():
    base, cur = data(2000, seed=1), data(2000, shift=0.15, seed=2)
    loose = drift.compare(base, cur, TYPES, {"id"}, {"maxPsi": 5, "maxKs": 1, "maxJensenShannon": 1})
    assert not loose["detected"]
    strict = drift.compare(base, cur, TYPES, {"id"}, {"maxPsi": 5, "maxKs": 1, "maxJensenShannon": 1, "minPValue": 0.05})
    assert strict["detected"] and strict["driftedColumns"] == ["x"]


def test_psi_known_value_and_new_categories():
    # PSI of (0.5, 0.5) -> (0.25, 0.75): 0.25*ln(0.5) + 0.25*ln(1.5)... computed by hand
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert abs(drift.psi(np.array([50.0, 50.0]), np.array([25.0, 75.0])) - expected) < 1e-9
    base = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50}, dtype=object)
    cur = pd.DataFrame({"c": ["a"] * 50 + ["z"] * 50}, dtype=object)
    col = drift.compare(base, cur, {"c": "string"}, set())["columns"][0]
    assert col["newCategories"] == ["z"] and col["drifted"]
