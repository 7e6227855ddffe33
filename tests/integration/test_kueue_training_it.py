"""TrainingRun on the embedded cluster: Kueue admission, a killed worker resumed from its
checkpoint, tenant credentials never leaked, queue errors.

The LabelJob is made Ready by writing its status (the contract: status.version and
status.splits with the label column), so the tests train on a synthetic data set big
enough to be killed mid-training. Runs before test_rbac_least_privilege (file order),
so the operator's read of LocalQueues is in the audit by then.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid

import numpy as np
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from loom.lineage.graph import load_events

pytestmark = pytest.mark.integration
NS = "train-it"
TENANT_KEY = "AKIATENANT" + uuid.uuid4().hex[:10].upper()
TENANT_SECRET = "tenant-secret-" + uuid.uuid4().hex
LOCALQUEUE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "localqueues.kueue.x-k8s.io"},
    "spec": {"group": "kueue.x-k8s.io", "scope": "Namespaced",
             "names": {"plural": "localqueues", "singular": "localqueue", "kind": "LocalQueue", "listKind": "LocalQueueList"},
             "versions": [{"name": "v1beta1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def tr(name: str, **spec) -> dict:
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name, "namespace": NS},
            "spec": {"labelJobRef": {"name": "synth"}, **spec}}


@pytest.fixture(scope="module")
def api(env):
    return k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(env.cluster.kubeconfig)))


@pytest.fixture(scope="module")
def synth(env, api):
    """Namespace, S3 Secrets (the default and a tenant's own), and a Ready LabelJob over a
    synthetic 3-class data set (2,400 train rows)."""
    s3 = env.cluster.s3_env
    env.applier.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for name, key, secret in (("loom-s3", s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]),
                              ("tenant-s3", TENANT_KEY, TENANT_SECRET)):
        env.applier.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                           "stringData": {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}})
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 2400), ("validation", 300)):
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 4)) + y[:, None] * 1.5
        rows = ["id,f1,f2,f3,f4,label"] + [f"{split}-{i},{','.join(f'{v:.4f}' for v in x[i])},c{y[i]}" for i in range(n)]
        data = ("\n".join(rows) + "\n").encode()
        uri = f"s3://loom/{NS}/labels/synth/{split}.csv"
        env.storage.put_bytes(uri, data)
        splits[split] = {"uri": uri, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "rows": n}
    splits["test"] = dict(splits["validation"])
    env.applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "LabelJob", "metadata": {"name": "synth", "namespace": NS},
                       "spec": {"datasetRef": {"name": "synth-data"}, "annotations": [{"uri": "s3://loom/x.csv"}]}})
    status = {"phase": "Ready", "observedGeneration": 1, "version": "sha256:" + "1" * 64,
              "datasetVersion": "sha256:" + "2" * 64, "classes": ["c0", "c1", "c2"], "splits": splits,
              "conditions": [{"type": "Ready", "status": "True", "reason": "Published", "message": "test data",
                              "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}
    # The operator may be reconciling the new LabelJob from a body read before this write, and
    # overwrite it once with Pending; a Ready status for its generation is then left alone.
    deadline = time.monotonic() + 60
    while True:
        api.patch_namespaced_custom_object_status("loom.dev", "v1alpha1", NS, "labeljobs", "synth", {"status": status})
        time.sleep(3)
        if env.get("LabelJob", "synth", NS).get("status", {}).get("phase") == "Ready":
            break
        assert time.monotonic() < deadline, env.get("LabelJob", "synth", NS).get("status")
    return splits


def pytorchjob(api, name: str) -> dict:
    return api.get_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs", name)


def test_queue_without_kueue_installed_fails_clearly(env, synth):
    env.applier.apply(tr("no-kueue", queue="team-a", hyperparameters={"epochs": 1}))
    obj = env.wait_phase("TrainingRun", "no-kueue", "Failed", ns=NS, timeout=60)
    failed = next(c for c in obj["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "KueueNotInstalled" and "kueue.x-k8s.io/v1beta1" in failed["message"]


def test_unknown_queue_waits_with_a_clear_reason(env, synth, api):
    env.applier.apply(LOCALQUEUE_CRD)
    time.sleep(1)
    env.applier.apply(tr("unknown-queue", queue="nope", hyperparameters={"epochs": 1}))
    obj = env.wait(
        "TrainingRun", "unknown-queue",
        lambda o: any(c.get("reason") == "LocalQueueNotFound" for c in (o.get("status") or {}).get("conditions") or []),
        ns=NS, timeout=60)
    assert obj["status"]["phase"] == "Pending"
    assert "LocalQueue 'nope' does not exist in namespace 'train-it'" in obj["status"]["conditions"][0]["message"]


def test_kueue_admits_a_queued_run(env, synth, api):
    """Created suspended with the queue label; Queued while the LocalQueue holds; Running once
    admitted; then Succeeded."""
    api.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta1", NS, "localqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue", "metadata": {"name": "team-a", "namespace": NS},
        "spec": {"clusterQueue": "gpu-cluster", "stopPolicy": "Hold"}})
    env.applier.apply(tr("queued", queue="team-a", priorityClassName="team-a-high", workers=1,
                         hyperparameters={"epochs": 3, "batchSize": 16, "learningRate": 0.01, "seed": 0}))
    obj = env.wait_phase("TrainingRun", "queued", "Queued", ns=NS, timeout=60)
    job = pytorchjob(api, obj["status"]["jobName"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert job["spec"]["runPolicy"]["schedulingPolicy"] == {"minAvailable": 2, "queue": "team-a",
                                                             "priorityClass": "team-a-high"}
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["priorityClassName"] == "team-a-high"
    time.sleep(2)  # held: still queued, no pod
    assert env.get("TrainingRun", "queued", NS)["status"]["phase"] == "Queued"
    api.patch_namespaced_custom_object("kueue.x-k8s.io", "v1beta1", NS, "localqueues", "team-a",
                                       {"spec": {"stopPolicy": "None"}})
    seen = []

    def done(o):
        p = (o.get("status") or {}).get("phase")
        if not seen or seen[-1] != p:
            seen.append(p)
        return p in ("Succeeded", "Failed")

    obj = env.wait("TrainingRun", "queued", done, ns=NS, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert seen[0] == "Queued" and "Running" in seen, seen
    assert pytorchjob(api, obj["status"]["jobName"])["spec"]["runPolicy"]["suspend"] is False


def test_killed_worker_resumes_from_checkpoint_and_secrets_stay_secret(env, synth, api):
    """Kill the Worker's process mid-training: the gang restarts, the trainer resumes from the
    latest checkpoint (not step 0) and the step count continues to the end. The run uses the
    tenant's own S3 Secret, whose values appear nowhere the operator writes."""
    env.applier.apply(tr("resume", workers=1, storageSecretRef={"name": "tenant-s3"},
                         hyperparameters={"epochs": 30, "batchSize": 8, "learningRate": 0.01, "seed": 0},
                         checkpoint={"everySteps": 40}, runPolicy={"backoffLimit": 2}))
    obj = env.wait("TrainingRun", "resume", lambda o: ((o.get("status") or {}).get("latestCheckpoint") or {}).get("step", 0) >= 40,
                   ns=NS, timeout=300)
    assert obj["status"]["phase"] == "Running", obj["status"]
    job = obj["status"]["jobName"]
    pod = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(env.cluster.kubeconfig))) \
        .read_namespaced_pod(f"{job}-worker-0", NS)
    pid = int(pod.status.container_statuses[0].container_id.removeprefix("local://"))
    killed_at = obj["status"]["latestCheckpoint"]["step"]
    os.kill(pid, signal.SIGKILL)

    obj = env.wait_phase("TrainingRun", "resume", {"Succeeded", "Failed"}, ns=NS, timeout=600)
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    result = env.storage.get_json(f"s3://loom/{NS}/runs/trainingrun/resume/{obj['metadata']['uid'][:8]}-g1/result.json")
    assert len(result["resumes"]) == 1, result["resumes"]
    resumed = result["resumes"][0]["step"]
    assert resumed >= killed_at > 0  # from a checkpoint, not from step zero
    assert result["steps"] == result["totalSteps"] == st["progress"]["step"]  # the count continued to the end
    assert st["restarts"] == 1 and st["latestCheckpoint"]["step"] == result["steps"]
    assert [h["epoch"] for h in result["history"]] == list(range(1, 31))  # no epoch lost or repeated

    events = [e for e in load_events(env.storage, NS) if e["job"]["name"] == "trainingrun/resume"]
    assert events
    facets = json.dumps(events[0])
    assert result["model"]["digest"] in facets and synth["train"]["digest"] in facets
    assert '"resumes"' in facets and '"configHash"' in facets

    # the tenant's keys: referenced by name, never copied
    pj = pytorchjob(api, job)
    container = pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "tenant-s3"}}]
    core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(env.cluster.kubeconfig)))
    evs = json.dumps([e.to_dict() for e in core.list_namespaced_event(NS).items], default=str)
    lineage = json.dumps(load_events(env.storage, NS))
    log = env.operator.log_path.read_text(errors="replace")
    for where, text in (("status", json.dumps(st)), ("events", evs), ("lineage", lineage),
                        ("PyTorchJob", json.dumps(pj)), ("operator log", log)):
        assert TENANT_KEY not in text and TENANT_SECRET not in text, f"a tenant secret leaked into {where}"


def test_preempted_run_checkpoints_on_sigterm_and_resumes(env, synth, api):
    """Kueue preempts (the local stand-in suspends the job when its LocalQueue drains): the
    pods get SIGTERM, rank 0 checkpoints, the run shows Queued/Preempted; admitted again,
    it resumes from that checkpoint and finishes."""
    api.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta1", NS, "localqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue", "metadata": {"name": "team-b", "namespace": NS},
        "spec": {"clusterQueue": "gpu-cluster"}})
    env.applier.apply(tr("preempted", queue="team-b", workers=1,
                         hyperparameters={"epochs": 30, "batchSize": 8, "learningRate": 0.01, "seed": 1},
                         checkpoint={"everySteps": 1000000}))  # no periodic checkpoint: only the SIGTERM one
    obj = env.wait("TrainingRun", "preempted", lambda o: ((o.get("status") or {}).get("progress") or {}).get("step", 0) >= 30,
                   ns=NS, timeout=300)
    assert obj["status"]["phase"] == "Running"
    api.patch_namespaced_custom_object("kueue.x-k8s.io", "v1beta1", NS, "localqueues", "team-b",
                                       {"spec": {"stopPolicy": "HoldAndDrain"}})
    obj = env.wait("TrainingRun", "preempted",
                   lambda o: (o.get("status") or {}).get("phase") == "Queued" and (o["status"].get("latestCheckpoint") or {}).get("step"),
                   ns=NS, timeout=120)
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Preempted", ready
    saved = obj["status"]["latestCheckpoint"]["step"]
    assert saved >= 30
    api.patch_namespaced_custom_object("kueue.x-k8s.io", "v1beta1", NS, "localqueues", "team-b",
                                       {"spec": {"stopPolicy": "None"}})
    obj = env.wait_phase("TrainingRun", "preempted", {"Succeeded", "Failed"}, ns=NS, timeout=600)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    result = env.storage.get_json(f"s3://loom/{NS}/runs/trainingrun/preempted/{obj['metadata']['uid'][:8]}-g1/result.json")
    assert [r["step"] for r in result["resumes"]] == [saved]
    assert result["steps"] == result["totalSteps"]
