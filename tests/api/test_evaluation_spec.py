"""Bad Evaluation specs are refused at admission (CRD schema and CEL) and by parse_spec alike,
each with a message that names the field and the problem."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from loom.api import parse_spec
from loom.local.admission import admit

ROOT = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((ROOT / "examples" / "quickstart" / "04-evaluation.yaml").read_text())["spec"]


def schema():
    doc = yaml.safe_load((ROOT / "crds" / "loom.dev_evaluations.yaml").read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def admission_errors(spec):
    obj = {"apiVersion": "loom.dev/v1alpha1", "kind": "Evaluation", "metadata": {"name": "x"}, "spec": copy.deepcopy(spec)}
    return [str(e) for e in admit(schema(), obj, None, [])]


def python_error(spec):
    with pytest.raises(ValueError) as info:
        parse_spec("Evaluation", spec)
    return str(info.value)


def edited(**over):
    return {**copy.deepcopy(GOOD), **over}


def test_the_quickstart_evaluation_is_valid():
    assert admission_errors(GOOD) == []
    spec = parse_spec("Evaluation", GOOD)
    assert spec.champion is not None and spec.robustness and spec.slices


# (id, spec, words in the admission message, words in the parse_spec message)
BAD = [
    ("unknown metric", edited(thresholds=[{"metric": "auc", "min": 0.5}]),
     ["spec.thresholds[0].metric", "unknown metric"], ["spec.thresholds[0].metric", "unknown metric 'auc'"]),
    ("unknown robustness metric", edited(thresholds=[{"metric": "robustness.noise.roc_auc", "min": 0.5}]),
     ["spec.thresholds[0].metric", "robustness.<perturbation>"], ["spec.thresholds[0].metric", "robustness.noise.roc_auc"]),
    ("undeclared perturbation", edited(thresholds=[{"metric": "robustness.blur.accuracy", "min": 0.5}]),
     ["spec.thresholds", "must name a perturbation declared in spec.robustness"],
     ["perturbation 'blur', which spec.robustness does not declare"]),
    ("min above max", edited(thresholds=[{"metric": "latency_p99_ms", "min": 50, "max": 10}]),
     ["spec.thresholds[0].min", "min must be less than or equal to max"], ["min (50) must be less than or equal to max (10)"]),
    ("unit metric above 1", edited(thresholds=[{"metric": "ece", "max": 2}]),
     ["spec.thresholds[0]", "lie in 0..1"], ["max of ece must lie in 0..1 (got 2)"]),
    ("negative tolerance", edited(champion={"deploymentRef": {"name": "iris"}, "tolerance": -0.1}),
     ["spec.champion.tolerance", "greater than or equal to 0"], ["spec.champion.tolerance", "greater than or equal to 0"]),
    ("slice minRows 0", edited(slices=[{"column": "label", "minRows": 0}]),
     ["spec.slices[0].minRows", "greater than or equal to 1"], ["spec.slices[0].minRows", "greater than or equal to 1"]),
    ("slice threshold on a probability metric", edited(slices=[{"column": "label", "thresholds": [{"metric": "roc_auc", "min": 0.5}]}]),
     ["spec.slices[0].thresholds", "slice thresholds take a label metric"], ["slices take a label metric"]),
    ("noise without sigma", edited(robustness=[{"name": "noise", "type": "gaussianNoise"}], thresholds=[{"metric": "accuracy", "min": 0.5}]),
     ["spec.robustness[0].sigma", "needs sigma"], ["spec.robustness[0]", "needs sigma"]),
    ("drop rate above 1", edited(robustness=[{"name": "d", "type": "dropValues", "rate": 1.5}], thresholds=[{"metric": "accuracy", "min": 0.5}]),
     ["spec.robustness[0].rate"], ["spec.robustness[0].rate"]),
    ("batch size 0", edited(latency={"batchSize": 0}), ["spec.latency.batchSize"], ["spec.latency.batchSize"]),
    ("champion metric lower-is-better", edited(champion={"deploymentRef": {"name": "iris"}, "metric": "log_loss"}),
     ["spec.champion.metric", "Unsupported value"], ["spec.champion.metric"]),
]


@pytest.mark.parametrize("case", [b[0] for b in BAD])
def test_bad_spec_is_refused_naming_the_field(case):
    _, spec, admission_words, python_words = next(b for b in BAD if b[0] == case)
    errors = admission_errors(spec)
    assert errors, "admitted"
    text = "; ".join(errors)
    for w in admission_words:
        assert w in text, text
    message = python_error(spec)
    for w in python_words:
        assert w in message, message


def test_duplicate_slice_columns_and_perturbation_names():
    # In Kubernetes the list-map keys (column, name) refuse duplicates at admission; parse_spec mirrors it.
    assert "duplicate slice column label" in python_error(edited(slices=[{"column": "label"}, {"column": "label"}]))
    spec = edited(robustness=[{"name": "noise", "type": "gaussianNoise", "sigma": 0.1}] * 2)
    assert "duplicate perturbation name noise" in python_error(spec)
