"""The TrainingRun planner's state machine, Kueue handling, progress, lineage and bad input."""
from __future__ import annotations

import datetime as dt

import pytest

from loom.api import parse_spec
from loom.config import Settings
from loom.reconcile import trainingrun
from loom.reconcile.common import get_condition

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
S = Settings(bucket="loom", s3_endpoint="http://s3:9000", workload_image="reg/loom@sha256:" + "f" * 64)
D = "sha256:" + "a" * 64
SPLITS = {k: {"uri": f"s3://loom/team-a/{k}.csv", "digest": f"sha256:{c * 64}", "rows": 10}
          for k, c in (("train", "1"), ("validation", "2"), ("test", "3"))}
LJ = {"metadata": {"name": "lj"}, "spec": {"datasetRef": {"name": "ds"}, "labelColumn": "label"},
      "status": {"phase": "Ready", "version": D, "datasetVersion": "sha256:" + "d" * 64, "classes": ["a", "b"],
                 "splits": SPLITS}}


def body(spec, status=None, annotations=None):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "tr", "namespace": "team-a", "uid": "0123456789abcdef", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {"labelJobRef": {"name": "lj"}, **spec}, "status": status or {}}


def conds(*types):
    return {"status": {"conditions": [{"type": t, "status": s} for t, s in types]}}


def plan(spec, **obs):
    return trainingrun.plan(body(spec), trainingrun.Observed(**obs), S, NOW)


def reason(p, type_="Ready"):
    return get_condition(p.status["conditions"], type_)["reason"]


def test_queue_creates_a_suspended_job_and_reports_queued():
    p = plan({"queue": "team-a"}, labeljob=LJ, queue="found")
    job = p.create[0]
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert p.status["phase"] == "Queued" and reason(p) == "WaitingForAdmission" and p.status["queue"] == "team-a"
    suspended = {**job, **conds(("Created", "True"), ("Suspended", "True"))}
    p = plan({"queue": "team-a"}, labeljob=LJ, job=suspended)
    assert p.status["phase"] == "Queued" and not p.create
    admitted = {**job, "spec": {**job["spec"], "runPolicy": {**job["spec"]["runPolicy"], "suspend": False}},
                **conds(("Created", "True"), ("Suspended", "False"), ("Running", "True"))}
    p = plan({"queue": "team-a"}, labeljob=LJ, job=admitted, progress={"step": 40, "totalSteps": 100, "epoch": 2,
                                                                       "loss": 0.5, "samplesPerSecond": 1234.5})
    assert p.status["phase"] == "Running" and p.status["progress"]["samplesPerSecond"] == 1234.5
    assert get_condition(p.status["conditions"], "Ready")["message"] == "step 40/100, epoch 2, loss 0.5000"


def test_preempted_job_is_queued_with_reason_preempted():
    job = {"spec": {"runPolicy": {"suspend": True}}, **conds(("Created", "True"), ("Suspended", "True"))}
    p = plan({"queue": "q"}, labeljob=LJ, job=job, progress={"step": 10})
    assert p.status["phase"] == "Queued" and reason(p) == "Preempted"


def test_unknown_queue_waits_and_missing_kueue_fails():
    p = plan({"queue": "nope"}, labeljob=LJ, queue="missing")
    assert not p.create and p.status["phase"] == "Pending" and reason(p) == "LocalQueueNotFound"
    assert "LocalQueue 'nope' does not exist in namespace 'team-a'" in get_condition(p.status["conditions"], "Ready")["message"]
    p = plan({"queue": "nope"}, labeljob=LJ, queue="no-kueue")
    assert not p.create and p.status["phase"] == "Failed" and reason(p, "Failed") == "KueueNotInstalled"


def test_missing_labeljob_waits():
    p = plan({}, labeljob=None)
    assert not p.create and p.status["phase"] == "Pending" and reason(p) == "LabelJobNotFound"


def test_restarting_names_the_checkpoint():
    job = conds(("Created", "True"), ("Running", "False"), ("Restarting", "True"))
    p = plan({}, labeljob=LJ, job=job, checkpoint={"latest": {"uri": "s3://loom/c.pt", "step": 40, "epoch": 1}},
             progress={"step": 44, "resumes": [{"step": 40}]})
    assert p.status["phase"] == "Restarting" and "resuming from the checkpoint at step 40" in \
        get_condition(p.status["conditions"], "Ready")["message"]
    assert p.status["latestCheckpoint"] == {"uri": "s3://loom/c.pt", "step": 40, "epoch": 1}
    assert p.status["restarts"] == 1


def test_one_failed_replica_fails_the_run():
    job = conds(("Created", "True"), ("Failed", "True"))
    job["status"]["conditions"][-1]["message"] = "PyTorchJob tr-g1 is failed because 1 Worker replica(s) failed."
    p = plan({}, labeljob=LJ, job=job, result={"error": "train split has label(s) not in classes: z"})
    assert p.status["phase"] == "Failed" and reason(p, "Failed") == "TrainingFailed"
    assert "not in classes" in get_condition(p.status["conditions"], "Failed")["message"]


RESULT = {"model": {"uri": "s3://loom/team-a/models/tr/model.onnx", "digest": "sha256:" + "9" * 64},
          "metrics": {"val_accuracy": 0.9, "train_loss": 0.2, "val_loss": 0.3}, "classes": ["a", "b"],
          "features": ["f"], "worldSize": 2, "backend": "gloo", "history": [{"epoch": 1, "loss": 0.2}],
          "steps": 80, "checkpoints": [{"uri": "s3://loom/c.pt", "digest": D, "step": 80}],
          "resumes": [{"step": 40, "checkpoint": "s3://loom/c40.pt"}], "gitCommit": "abc123", "precision": "bf16"}


def test_succeeded_writes_the_experiment_record():
    done = conds(("Created", "True"), ("Succeeded", "True"))
    b = body({"precision": "bf16", "hyperparameters": {"seed": 7}}, annotations={"loom.dev/git-commit": "deadbeef"})
    p = trainingrun.plan(b, trainingrun.Observed(labeljob=LJ, job=done, result=RESULT), S, NOW)
    assert p.status["phase"] == "Succeeded" and p.status["restarts"] == 1
    assert p.status["progress"] == {"step": 80, "loss": 0.2}  # the final figures come from the result
    assert p.status["latestCheckpoint"] == {"uri": "s3://loom/c.pt", "step": 80}
    rec = p.lineage[0]
    assert rec.inputs == [{"uri": SPLITS[k]["uri"], "digest": SPLITS[k]["digest"]} for k in ("train", "validation")]
    assert rec.outputs == [RESULT["model"]]
    f = rec.facets
    assert f["imageDigest"] == "sha256:" + "f" * 64 and f["gitCommit"] == "deadbeef"  # the annotation wins
    assert f["seed"] == 7 and f["precision"] == "bf16" and f["labelVersion"] == D
    assert f["datasetVersion"] == "sha256:" + "d" * 64 and f["modelDigest"] == RESULT["model"]["digest"]
    assert f["configHash"] == p.status["hyperparametersHash"] and f["configHash"].startswith("sha256:")
    assert f["checkpoints"] == RESULT["checkpoints"] and f["resumes"] == RESULT["resumes"]
    # the hash follows the configuration
    other = trainingrun.plan(body({"precision": "bf16", "hyperparameters": {"seed": 8}}),
                             trainingrun.Observed(labeljob=LJ, job=done, result=RESULT), S, NOW)
    assert other.status["hyperparametersHash"] != f["configHash"]


def test_tag_only_image_has_no_digest():
    assert trainingrun.image_digest("reg/loom:1") is None
    assert trainingrun.image_digest("reg/loom@sha256:" + "0" * 64) == "sha256:" + "0" * 64


def test_cross_namespace_secret_refused():
    p = plan({"storageSecretRef": {"name": "s3", "namespace": "other"}}, labeljob=LJ)
    assert p.status["phase"] == "Failed" and reason(p, "Failed") == "CrossNamespaceReference"
    assert "spec.storageSecretRef.namespace 'other'" in get_condition(p.status["conditions"], "Failed")["message"]


def test_trainjob_backend_kept_apart():
    p = plan({"backend": "trainjob"}, labeljob=LJ)
    assert p.create[0]["kind"] == "TrainJob" and p.status["backend"] == "TrainJob"
    p = plan({}, labeljob=LJ)
    assert p.create[0]["kind"] == "PyTorchJob" and p.status["backend"] == "PyTorchJob"


@pytest.mark.parametrize("spec,field,words", [
    ({"workers": 0, "nprocPerNode": 0}, "spec.nprocPerNode", "greater than or equal to 1"),
    ({"resources": {"gpus": 1}}, "spec", "needs an image with CUDA"),
    ({"resources": {"gpus": 1}, "image": "reg/cpu:1"}, "spec", "imageHasCuda: true"),
    ({"imageHasCuda": True}, "spec", "set spec.image too"),
    ({"precision": "fp16"}, "spec", "fp16 needs a GPU"),
    ({"runPolicy": {"activeDeadlineSeconds": -5}}, "spec.runPolicy.activeDeadlineSeconds", "greater than or equal to 1"),
    ({"runPolicy": {"ttlSecondsAfterFinished": -1}}, "spec.runPolicy.ttlSecondsAfterFinished", "greater than or equal to 0"),
    ({"runPolicy": {"backoffLimit": -1}}, "spec.runPolicy.backoffLimit", "greater than or equal to 0"),
    ({"queue": "Not_A_Name"}, "spec.queue", "DNS-1123"),
    ({"minAvailable": 5, "workers": 1}, "spec", "minAvailable 5 cannot exceed"),
    ({"checkpoint": {"everySteps": 0}}, "spec.checkpoint.everySteps", "greater than or equal to 1"),
    ({"earlyStopping": {"metric": "vibes"}}, "spec.earlyStopping.metric", "val_accuracy"),
])
def test_bad_input_is_refused_with_a_message_naming_the_field(spec, field, words):
    with pytest.raises(ValueError) as err:
        parse_spec("TrainingRun", {"labelJobRef": {"name": "lj"}, **spec})
    msg = str(err.value)
    assert field in msg and words in msg, msg
    # the planner (last line) turns it into a Failed condition, never an exception
    p = plan(spec, labeljob=LJ)
    assert p.status["phase"] == "Failed" and reason(p, "Failed") == "InvalidSpec" and not p.create


def test_every_status_fits_the_crd_unpruned():
    from pathlib import Path

    import yaml

    from loom.local.admission import admit

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "loom.dev_trainingruns.yaml").read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = {"queue": "q", "precision": "bf16"}
    running = conds(("Created", "True"), ("Running", "False"), ("Restarting", "True"))
    plans = [
        plan(spec, labeljob=LJ, queue="found"),
        plan(spec, labeljob=LJ, job=running, progress={"step": 4, "totalSteps": 9, "epoch": 1, "loss": 0.1,
                                                       "samplesPerSecond": 10.5, "updatedAt": "2026-11-22T12:00:00Z",
                                                       "resumes": [{"step": 2}]},
             checkpoint={"latest": {"uri": "s3://loom/c.pt", "step": 2, "epoch": 0, "digest": D}}),
        plan(spec, labeljob=LJ, job=conds(("Succeeded", "True")), result=RESULT),
    ]
    for p in plans:
        pruned: list[str] = []
        obj = {"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "x"},
               "spec": {"labelJobRef": {"name": "lj"}, **spec}, "status": p.status}
        errors = admit(schema, obj, None, pruned)
        assert not errors and not pruned, ([str(e) for e in errors], pruned)


def test_multi_tenant_example_is_consistent():
    """examples/multi-tenant: every TrainingRun is admissible, stays in its namespace, and
    names a LocalQueue and a Secret of its own namespace; each namespace has a GPU quota."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "examples" / "multi-tenant"
    docs = [d for f in sorted(root.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind: dict[str, list] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    runs = by_kind["TrainingRun"]
    assert {r["metadata"]["namespace"] for r in runs} == {"team-a", "team-b"}
    queues = {(q["metadata"]["namespace"], q["metadata"]["name"]) for q in by_kind["LocalQueue"]}
    secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in by_kind["Secret"]}
    quotas = {q["metadata"]["namespace"] for q in by_kind["ResourceQuota"] if "requests.nvidia.com/gpu" in q["spec"]["hard"]}
    cluster_queues = {c["metadata"]["name"] for c in by_kind["ClusterQueue"]}
    for r in runs:
        ns, spec = r["metadata"]["namespace"], r["spec"]
        parse_spec("TrainingRun", spec)
        assert (ns, spec["queue"]) in queues and (ns, spec["storageSecretRef"]["name"]) in secrets and ns in quotas
    for q in by_kind["LocalQueue"]:
        assert q["spec"]["clusterQueue"] in cluster_queues
    for c in by_kind["ClusterQueue"]:
        gpu = [r for g in c["spec"]["resourceGroups"] for f in g["flavors"] for r in f["resources"] if r["name"] == "nvidia.com/gpu"]
        assert gpu and gpu[0]["nominalQuota"] > 0
