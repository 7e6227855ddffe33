"""A crash of the operator at any point converges: no duplicate children, no lost record."""
from __future__ import annotations


import pytest

from it_helpers import phase

pytestmark = pytest.mark.integration
NS = "restart"


def test_operator_killed_mid_chain_converges_without_duplicates(env):
    docs = []
    for name in ("00-namespace.yaml", "01-dataset.yaml", "02-labeljob.yaml", "03-trainingrun.yaml", "04-evaluation.yaml"):
        docs += env.quickstart(name, NS)
    env.applier.apply_all(docs)
    env.wait_phase("TrainingRun", "iris-mlp", {"Running", "Pending"}, ns=NS, timeout=120)
    env.wait("TrainingRun", "iris-mlp", lambda o: (o.get("status") or {}).get("jobName"), ns=NS, timeout=60)

    env.operator.kill()  # SIGKILL: no clean shutdown, whatever it was doing is cut off
    env.start_operator()

    ev = env.wait_phase("Evaluation", "iris-mlp-eval", {"Passed", "Failed"}, ns=NS, timeout=240)
    assert phase(ev) == "Passed", ev["status"]
    api = env.applier.client
    jobs = api.resources.get(api_version="batch/v1", kind="Job").get(namespace=NS).to_dict()["items"]
    pjs = api.resources.get(api_version="kubeflow.org/v1", kind="PyTorchJob").get(namespace=NS).to_dict()["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == ["iris-ingest-g1", "iris-mlp-eval-eval-g1", "iris-species-label-g1"]
    assert [p["metadata"]["name"] for p in pjs] == ["iris-mlp-g1"]
    # One lineage event per step: a rewrite after the restart replaced, never duplicated.
    events = env.storage.list(f"s3://loom/{NS}/lineage/")
    kinds = sorted(e.key.split("/")[2] for e in events)
    assert kinds == ["dataset", "evaluation", "labeljob", "trainingrun"], kinds
