"""Applied in any order (GitOps): a TrainingRun before its LabelJob, a LabelJob before its
Dataset. The operator reads parents from its kopf indexes; a parent the index has not seen
is read by GET (the watch can lag behind a create), and a parent that appears later is
picked up from the index on the next tick."""
from __future__ import annotations

import pytest

from it_helpers import condition, phase

pytestmark = pytest.mark.integration

NS = "any-order"


def obj(kind, name, spec):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


def reason(o):
    return condition(o, "Ready").get("reason")


def test_children_first_wait_for_their_parents_with_a_reason(env):
    env.applier.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    env.applier.apply(obj("TrainingRun", "early", {"labelJobRef": {"name": "later"}}))
    tr = env.wait("TrainingRun", "early", lambda o: reason(o) == "LabelJobNotFound", ns=NS, timeout=60)
    assert phase(tr) == "Pending" and "later" in condition(tr, "Ready")["message"]

    env.applier.apply(obj("LabelJob", "later", {"datasetRef": {"name": "later"},
                                               "annotations": [{"uri": "s3://loom-examples/nope.csv"}]}))
    lj = env.wait("LabelJob", "later", lambda o: reason(o) == "DatasetNotFound", ns=NS, timeout=60)
    assert phase(lj) == "Pending"
    # The LabelJob now exists (Pending): the run waits for it rather than for its existence.
    tr = env.wait("TrainingRun", "early", lambda o: reason(o) == "WaitingLabelJob", ns=NS, timeout=60)
    assert phase(tr) == "Pending"
    assert env.applier.get("kubeflow.org/v1", "PyTorchJob", "early-g1", NS) is None
