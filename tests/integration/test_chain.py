"""The whole chain through the real operator: quickstart, canary promotion, automatic rollback."""
from __future__ import annotations

import copy
import json
import urllib.request

import pytest

from it_helpers import condition, phase

pytestmark = pytest.mark.integration


def predict(url: str, rows: list[list[float]]) -> dict:
    req = urllib.request.Request(f"{url}/v1/models/iris:predict", data=json.dumps({"instances": rows}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def quickstart(env):
    for name in ("00-namespace.yaml", "01-dataset.yaml", "02-labeljob.yaml", "03-trainingrun.yaml",
                 "04-evaluation.yaml", "05-deployment.yaml"):
        env.applier.apply_all(env.quickstart(name))
    return env.wait_phase("Deployment", "iris", {"Available", "Failed"}, timeout=300)


def test_quickstart_reaches_a_served_model(env, quickstart):
    assert phase(quickstart) == "Available", quickstart.get("status")
    ds = env.get("Dataset", "iris")
    assert ds["status"]["version"].startswith("sha256:") and ds["status"]["rows"] == 150
    assert sum(s["rows"] for s in ds["status"]["splits"].values()) == 150
    lj = env.get("LabelJob", "iris-species")
    assert lj["status"]["agreement"]["metric"] == "fleiss_kappa" and lj["status"]["agreement"]["value"] >= 0.6
    tr = env.get("TrainingRun", "iris-mlp")
    assert tr["status"]["model"]["digest"].startswith("sha256:")
    ev = env.get("Evaluation", "iris-mlp-eval")
    assert phase(ev) == "Passed" and ev["status"]["metrics"]["accuracy"] >= 0.8
    assert condition(ev, "Passed")["status"] == "True"
    # The served model is the evaluated one, and it answers.
    assert quickstart["status"]["model"]["digest"] == tr["status"]["model"]["digest"] == ev["status"]["model"]["digest"]
    answer = predict(quickstart["status"]["url"], [[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]])
    assert answer["predictions"] == ["setosa", "virginica"]


def test_children_are_owned_and_status_follows_conventions(env, quickstart):
    isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", "quickstart")
    owner = isvc["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Deployment" and owner["uid"] == quickstart["metadata"]["uid"]
    pj = env.applier.get("kubeflow.org/v1", "PyTorchJob", "iris-mlp-g1", "quickstart")
    assert set(pj["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    for kind, name in (("Dataset", "iris"), ("Deployment", "iris")):
        obj = env.get(kind, name)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        ready = condition(obj, "Ready")
        assert ready["status"] == "True" and ready["lastTransitionTime"] and ready["reason"]


def test_lineage_walks_from_the_deployment_to_the_sources(env, quickstart):
    from loom.lineage.graph import chain, load_events, sources

    tree = chain(load_events(env.storage, "quickstart", "loom"), "deployment/iris")
    uris = {s["uri"] for s in sources(tree)}
    assert {"s3://loom-examples/quickstart/iris.csv", "s3://loom-examples/quickstart/annotations.csv"} <= uris


def _second_model(env, suffix: str, hidden: int, seed: int) -> None:
    tr = copy.deepcopy(env.quickstart("03-trainingrun.yaml")[0])
    tr["metadata"]["name"] = f"iris-mlp-{suffix}"
    tr["spec"]["model"]["hiddenUnits"] = hidden
    tr["spec"]["hyperparameters"]["seed"] = seed
    ev = copy.deepcopy(env.quickstart("04-evaluation.yaml")[0])
    ev["metadata"]["name"] = f"iris-mlp-{suffix}-eval"
    ev["spec"]["trainingRunRef"]["name"] = tr["metadata"]["name"]
    env.applier.apply_all([tr, ev])
    env.wait_phase("Evaluation", ev["metadata"]["name"], {"Passed", "Failed"}, timeout=240)


def _point_deployment_at(env, evaluation: str) -> None:
    env.applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment",
                       "metadata": {"name": "iris", "namespace": "quickstart"},
                       "spec": {"evaluationRef": {"name": evaluation}, "canary": {"steps": [20]},
                                "analysis": {"interval": 3, "metrics": []}}})  # no traffic here: no metrics to judge


def test_new_model_goes_out_as_canary_and_is_promoted(env, quickstart):
    champion = env.get("Deployment", "iris")["status"]["model"]
    _second_model(env, "v2", hidden=24, seed=1)
    new = env.get("Evaluation", "iris-mlp-v2-eval")["status"]["model"]
    assert new["digest"] != champion["digest"]
    _point_deployment_at(env, "iris-mlp-v2-eval")
    env.wait("Deployment", "iris", lambda o: (o.get("status") or {}).get("rollout", {}).get("weight") == 20, timeout=120)
    isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", "quickstart")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    dep = env.wait("Deployment", "iris",
                   lambda o: (o.get("status") or {}).get("model", {}).get("digest") == new["digest"], timeout=120)
    assert phase(dep) == "Available" and dep["status"]["previousModel"]["digest"] == champion["digest"]
    isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", "quickstart")
    assert isvc["spec"]["predictor"].get("canaryTrafficPercent") is None


def test_tampered_canary_is_rolled_back_and_serves_nothing_after(env, quickstart):
    _second_model(env, "v3", hidden=8, seed=2)
    champion = env.get("Deployment", "iris")["status"]["model"]
    bad = env.get("Evaluation", "iris-mlp-v3-eval")["status"]["model"]
    # The model file changes after its evaluation passed: the server must refuse it.
    env.storage.put_bytes(bad["uri"], b"not the evaluated model")
    _point_deployment_at(env, "iris-mlp-v3-eval")
    dep = env.wait_phase("Deployment", "iris", "RolledBack", timeout=180)
    rb = condition(dep, "RolledBack")
    assert rb["status"] == "True" and bad["digest"][:19] in rb["message"]
    assert dep["status"]["model"]["digest"] == champion["digest"]
    assert bad["digest"] in [m["digest"] for m in dep["status"]["rejectedModels"]]
    isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", "quickstart")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0  # KServe's rollback: all traffic to the champion
    # Every request after the rollback is answered by the champion.
    url = dep["status"]["url"]
    for _ in range(10):
        assert predict(url, [[5.1, 3.5, 1.4, 0.2]])["predictions"] == ["setosa"]


def test_nproc_per_node_runs_local_ranks_under_torchrun(env, quickstart):
    tr = copy.deepcopy(env.quickstart("03-trainingrun.yaml")[0])
    tr["metadata"]["name"] = "iris-mlp-nproc"
    tr["spec"].update({"workers": 0, "nprocPerNode": 2})
    tr["spec"]["hyperparameters"]["epochs"] = 5
    env.applier.apply(tr)
    done = env.wait_phase("TrainingRun", "iris-mlp-nproc", {"Succeeded", "Failed"}, timeout=180)
    assert phase(done) == "Succeeded", done["status"]
    assert done["status"]["worldSize"] == 2
    pj = env.applier.get("kubeflow.org/v1", "PyTorchJob", "iris-mlp-nproc-g1", "quickstart")
    assert pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"][0] == "torchrun"
