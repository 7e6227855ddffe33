"""Metrics, calibration, perturbations and latency, on hand-checked numbers and a real ONNX model."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from loom.workloads import calibration, latency, metrics, robustness

import onnx_models as om


def test_label_metrics_count_every_class_of_the_model():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    m = metrics.label_metrics(y, pred, 3)  # class 2 never appears: it still counts in the macro mean
    assert m["accuracy"] == 0.75
    assert m["recall_macro"] == pytest.approx((0.5 + 1.0 + 0.0) / 3, abs=1e-6)
    assert m["precision_macro"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3, abs=1e-6)
    pc = metrics.per_class(y, pred, ["a", "b", "c"])
    assert pc["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3, abs=1e-6), "support": 2}
    assert metrics.confusion(y, pred, 3) == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_probability_metrics_and_softmax_of_logits():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    probs = metrics.as_probabilities(logits)
    assert np.allclose(probs.sum(axis=1), 1) and probs[0, 0] == pytest.approx(1 / (1 + np.exp(-2)))
    assert np.allclose(metrics.as_probabilities(probs), probs, atol=1e-12)  # a distribution: no second softmax
    y = np.array([0, 1, 1, 0])
    m, notes = metrics.probability_metrics(y, probs)
    # positives' scores for class 1: rows 1 and 2; AUC = share of (pos, neg) pairs ranked right = 3/4
    assert m["roc_auc"] == pytest.approx(0.75) and notes == []
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(4), y])), abs=1e-6)
    three = metrics.as_probabilities(np.eye(3)[[0, 1, 1]])
    m, notes = metrics.probability_metrics(np.array([0, 1, 1]), three)
    assert "roc_auc" not in m and "2 of the model's 3 classes" in notes[0]


def test_ece_and_reliability_table_by_hand():
    # confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.55 (right)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0])
    ece, table = calibration.reliability(y, probs, bins=5)
    # bins (0.4,0.6]: 0.6, 0.55 -> acc 1, conf 0.575; (0.6,0.8]: 0.8 -> acc 0; (0.8,1]: 0.9 -> acc 1
    expected = 2 / 4 * abs(1 - 0.575) + 1 / 4 * abs(0 - 0.8) + 1 / 4 * abs(1 - 0.9)
    assert ece == pytest.approx(expected, abs=1e-6)
    assert [row["count"] for row in table] == [0, 0, 2, 1, 1]
    assert table[2] == {"bin": 2, "lower": 0.4, "upper": 0.6, "count": 2, "confidence": 0.575, "accuracy": 1.0,
                        "gap": 0.425}
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert calibration.reliability(np.array([0, 1]), perfect, 10)[0] == 0.0


def test_perturbations_are_seeded_and_do_what_they_say():
    x = pd.DataFrame({"a": np.arange(100, dtype=float), "b": np.ones(100)})
    noise = {"name": "n", "type": "gaussianNoise", "sigma": 0.5, "seed": 3, "columns": ["a"]}
    one, two = robustness.perturb(x, noise), robustness.perturb(x, noise)
    assert one.equals(two) and not one.equals(robustness.perturb(x, dict(noise, seed=4)))
    assert (one["b"] == 1).all()  # only the named column
    assert (one["a"] - x["a"]).std() == pytest.approx(0.5 * x["a"].std(ddof=0), rel=0.2)
    drop = robustness.perturb(x, {"name": "d", "type": "dropValues", "rate": 0.3, "fill": "zero", "seed": 1})
    share = (drop["a"] != x["a"]).mean()
    assert 0.15 < share < 0.45 and set(drop.loc[drop["a"] != x["a"], "a"]) == {0.0}
    mean = robustness.perturb(x, {"name": "d", "type": "dropValues", "rate": 1.0, "fill": "mean"})
    assert (mean["a"] == 49.5).all()
    with pytest.raises(robustness.PerturbationError, match="column\\(s\\) zz"):
        robustness.perturb(x, dict(noise, columns=["zz"]))


def test_latency_on_a_real_onnx_session():
    session = ort.InferenceSession(om.good_model(), providers=["CPUExecutionProvider"])
    x = om.test_frame(n=5)[om.FEATURES].to_numpy(np.float32)
    assert latency.batch_of(x, 12).shape == (12, 3)  # fewer rows than the batch: tiled
    out = latency.measure(session, x, batch_size=12, iterations=15, warmup=1)
    assert out["batchSize"] == 12 and out["iterations"] == 15 and out["provider"] == "CPUExecutionProvider"
    assert 0 < out["latency_p50_ms"] <= out["latency_p95_ms"] <= out["latency_p99_ms"]
    assert out["throughput_rps"] > 0


def test_summarise_percentiles():
    s = latency.summarise([0.001] * 98 + [0.010, 0.020], batch_size=10)
    assert s["latency_p50_ms"] == pytest.approx(1.0) and s["latency_p99_ms"] > 9.9
    assert s["throughput_rps"] == pytest.approx(10 * 100 / (0.098 + 0.03), rel=1e-6)
