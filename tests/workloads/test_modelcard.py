"""The model card: JSON holds everything; Markdown renders every section from it."""
from __future__ import annotations

from loom.workloads import modelcard

D = "sha256:" + "a" * 64
TASK = {"namespace": "ns", "name": "ev", "trainingRun": "tr", "idColumn": "id", "labelColumn": "label",
        "versions": {"dataset": "sha256:" + "d" * 64, "labels": "sha256:" + "e" * 64}}
RESULT = {
    "model": {"uri": "s3://loom/m.onnx", "digest": D},
    "test": {"uri": "s3://loom/test.csv", "digest": D, "rows": 4},
    "datasetTest": {"uri": "s3://loom/ds-test.csv", "digest": D, "rows": 4},
    "classes": ["a", "b"], "features": ["x0"],
    "metrics": {"accuracy": 0.75, "ece": 0.1, "robustness.noise.accuracy": 0.5},
    "perClass": {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
                 "b": {"precision": 0.667, "recall": 1.0, "f1": 0.8, "support": 2}},
    "confusionMatrix": [[1, 1], [0, 2]],
    "calibration": {"ece": 0.1, "bins": 2, "table": [
        {"bin": 0, "lower": 0.0, "upper": 0.5, "count": 0},
        {"bin": 1, "lower": 0.5, "upper": 1.0, "count": 4, "confidence": 0.85, "accuracy": 0.75, "gap": 0.1}]},
    "slices": [{"column": "region", "value": "north", "rows": 3, "skipped": False, "metrics": {"accuracy": 1.0, "f1_macro": 1.0}},
               {"column": "region", "value": "south", "rows": 1, "skipped": True}],
    "robustness": [{"name": "noise", "type": "gaussianNoise", "parameters": '{"sigma": 1.0}',
                    "metrics": {"accuracy": 0.5, "f1_macro": 0.4}, "accuracyDrop": 0.25}],
    "latency": {"latency_p50_ms": 0.1, "latency_p95_ms": 0.2, "latency_p99_ms": 0.3, "throughput_rps": 1e5,
                "batchSize": 32, "iterations": 200, "warmup": 10, "provider": "CPUExecutionProvider"},
    "champion": {"deployment": "iris", "metric": "accuracy", "tolerance": 0.0,
                 "model": {"uri": "s3://loom/c.onnx", "digest": "sha256:" + "c" * 64}, "value": 0.8},
    "leakage": {"passed": True, "message": "no test row in the training inputs"},
}
CHECKS = [{"metric": "accuracy", "value": 0.75, "bound": ">= 0.8", "passed": False, "message": "accuracy 0.7500 < min 0.8000"},
          {"metric": "champion.accuracy", "value": 0.75, "bound": ">= 0.8", "passed": False, "message": "regressed"}]


def test_card_json_carries_everything_the_issue_lists():
    card = modelcard.build(TASK, RESULT, CHECKS)
    assert card["schema"] == "loom.dev/model-card/v1" and card["verdict"] == "Failed"
    assert card["model"]["digest"] == D
    assert card["data"]["datasetVersion"] == TASK["versions"]["dataset"]
    assert card["data"]["labelVersion"] == TASK["versions"]["labels"]
    for key in ("metrics", "slices", "calibration", "robustness", "latency", "checks", "champion", "leakage"):
        assert card[key], key
    assert modelcard.build(TASK, RESULT, [dict(c, passed=True) for c in CHECKS])["verdict"] == "Passed"


def test_markdown_renders_each_section():
    md = modelcard.markdown(modelcard.build(TASK, RESULT, CHECKS))
    assert md.startswith("# Model card: ev\n\n**Verdict: Failed**")
    for section in ("## Model", "## Data", "## Leakage proof", "## Checks", "## Metrics", "### Per class",
                    "### Confusion matrix", "## Calibration", "## Slices", "## Robustness", "## Latency (ONNX Runtime)",
                    "## Champion"):
        assert section in md, section
    assert "| accuracy | 0.7500 | >= 0.8 | NO | accuracy 0.7500 < min 0.8000 |" in md
    assert "| region | south | 1 | - | - | skipped (< minRows) |" in md
    assert "| 1 | (0.50, 1.00] | 4 | 0.8500 | 0.7500 |" in md
    assert "Deployment iris serves `sha256:cccc" in md


def test_markdown_without_a_champion_model():
    result = dict(RESULT, champion={"deployment": "iris", "metric": "accuracy", "reason": "Deployment 'iris' does not exist"})
    assert "- no champion: Deployment 'iris' does not exist" in modelcard.markdown(modelcard.build(TASK, result, CHECKS))
