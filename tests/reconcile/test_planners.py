"""Planners are pure: each test feeds observed state and checks the plan. No cluster."""
from __future__ import annotations

import datetime as dt

from loom.config import Settings
from loom.reconcile import dataset, deployment, evaluation, gate, labeljob, trainingrun
from loom.reconcile.common import child_name, get_condition
from loom.reconcile.steps import StepObserved

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
S = Settings(bucket="loom", s3_endpoint="http://s3:9000")
D = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def body(kind, spec, name="x", status=None, generation=1, ns="team-a"):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": "0123456789abcdef", "generation": generation},
            "spec": spec, "status": status or {}}


def job(state):
    conds = {"ok": [{"type": "Complete", "status": "True"}], "fail": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "pod failed"}], "run": []}[state]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": conds}}


DS_SPEC = {
    "sources": [{"uri": "s3://data/iris.csv", "format": "csv",
                 "provenance": {"owner": "o", "license": "CC-BY-4.0", "consent": "public", "collectedAt": "2020-01-01T00:00:00Z"}}],
    "split": {"seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2},
}
SPLITS = {k: {"uri": f"s3://loom/team-a/{k}.csv", "digest": D, "rows": 10} for k in ("train", "validation", "test")}


def test_dataset_creates_one_job_then_goes_ready_from_result():
    b = body("Dataset", DS_SPEC)
    p = dataset.plan(b, StepObserved(), S, NOW)
    assert [c["kind"] for c in p.create] == ["Job"]
    j = p.create[0]
    assert j["metadata"]["ownerReferences"][0]["uid"] == "0123456789abcdef"
    env = {e["name"]: e.get("value") for e in j["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert '"resultUri": "s3://loom/team-a/runs/dataset/x/01234567-g1/result.json"' in env["LOOM_TASK"]
    assert p.status["phase"] == "Ingesting"

    result = {"version": D, "rows": 30, "columns": ["id", "a"], "manifestUri": "s3://loom/m.json", "splits": SPLITS,
              "objects": [{"uri": "s3://data/iris.csv", "digest": D2, "bytes": 10}]}
    p = dataset.plan(b, StepObserved(job=job("ok"), result=result), S, NOW)
    assert p.status["phase"] == "Ready" and p.status["version"] == D and p.create == []
    assert get_condition(p.status["conditions"], "Ready")["status"] == "True"
    assert p.lineage[0].inputs == [{"uri": "s3://data/iris.csv", "digest": D2}]


def test_dataset_failed_job_reports_workload_message_not_traceback():
    p = dataset.plan(body("Dataset", DS_SPEC), StepObserved(job=job("fail"), result={"error": "s3://data/iris.csv: column 'id' missing"}), S, NOW)
    assert p.status["phase"] == "Failed"
    cond = get_condition(p.status["conditions"], "Failed")
    assert cond["status"] == "True" and cond["reason"] == "IngestFailed" and "column 'id' missing" in cond["message"]


def test_invalid_spec_is_failed_with_field_named():
    bad = dict(DS_SPEC, split={"train": 2.0, "validation": 0.1, "test": 0.1})
    p = dataset.plan(body("Dataset", bad), StepObserved(), S, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    assert "spec.split.train" in get_condition(p.status["conditions"], "Failed")["message"]


def test_settled_generation_does_nothing():
    b = body("Dataset", DS_SPEC, status={"phase": "Ready", "observedGeneration": 1})
    assert dataset.plan(b, StepObserved(), S, NOW).create == []


def test_new_generation_gets_a_new_job_name():
    assert dataset.job_name(body("Dataset", DS_SPEC, generation=3)).endswith("ingest-g3")
    long = child_name("n" * 70, "ingest-g1")
    assert len(long) <= 63 and long != child_name("n" * 71, "ingest-g1")


LJ_SPEC = {"datasetRef": {"name": "iris"}, "annotations": [{"uri": "s3://data/a.csv"}], "minAgreement": 0.7}
READY_DS = {"metadata": {"name": "iris"}, "spec": {"idColumn": "id"}, "status": {"phase": "Ready", "version": D, "splits": SPLITS}}


def test_labeljob_waits_for_dataset_then_gates_on_agreement():
    p = labeljob.plan(body("LabelJob", LJ_SPEC), labeljob.Observed(), S, NOW)
    assert p.status["phase"] == "Pending" and "does not exist" in get_condition(p.status["conditions"], "Ready")["message"]
    p = labeljob.plan(body("LabelJob", LJ_SPEC), labeljob.Observed(dataset=READY_DS), S, NOW)
    assert p.create and p.create[0]["kind"] == "Job"
    low = {"passed": False, "agreement": {"metric": "fleiss_kappa", "value": 0.41}, "annotators": ["a", "b", "c"],
           "message": "fleiss_kappa 0.41 is below minAgreement 0.70"}
    p = labeljob.plan(body("LabelJob", LJ_SPEC), labeljob.Observed(dataset=READY_DS, job=job("ok"), result=low), S, NOW)
    assert p.status["phase"] == "Failed"
    cond = get_condition(p.status["conditions"], "Failed")
    assert cond["reason"] == "AgreementBelowThreshold" and "0.41" in cond["message"]


def test_cross_namespace_reference_is_refused():
    spec = dict(LJ_SPEC, datasetRef={"name": "iris", "namespace": "team-b"})
    p = labeljob.plan(body("LabelJob", spec), labeljob.Observed(dataset=READY_DS), S, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    assert get_condition(p.status["conditions"], "Failed")["reason"] == "CrossNamespaceReference"


READY_LJ = {"metadata": {"name": "lj"}, "spec": {"datasetRef": {"name": "iris"}, "labelColumn": "label"},
            "status": {"phase": "Ready", "version": D, "classes": ["a", "b"], "splits": SPLITS}}


def test_trainingrun_builds_pytorchjob_and_follows_its_conditions():
    b = body("TrainingRun", {"labelJobRef": {"name": "lj"}, "workers": 2})
    p = trainingrun.plan(b, trainingrun.Observed(labeljob=READY_LJ, dataset=READY_DS), S, NOW)
    pj = p.create[0]
    assert pj["kind"] == "PyTorchJob" and pj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"] == "pytorch"
    running = {"status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}}
    p = trainingrun.plan(b, trainingrun.Observed(labeljob=READY_LJ, job=running), S, NOW)
    assert p.status["phase"] == "Running"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "Worker 1 exited 1"}]}}
    p = trainingrun.plan(b, trainingrun.Observed(labeljob=READY_LJ, job=failed), S, NOW)
    assert p.status["phase"] == "Failed" and "Worker 1 exited 1" in get_condition(p.status["conditions"], "Failed")["message"]


def test_gpus_become_resource_requests_and_limits():
    b = body("TrainingRun", {"labelJobRef": {"name": "lj"}, "resources": {"gpus": 2}, "image": "reg/loom-cuda:1", "imageHasCuda": True})
    pj = trainingrun.plan(b, trainingrun.Observed(labeljob=READY_LJ, dataset=READY_DS), S, NOW).create[0]
    res = pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "2" and res["requests"]["nvidia.com/gpu"] == "2"


def test_judge_names_each_failing_check():
    checks = gate.judge({"accuracy": 0.7, "f1_macro": 0.9},
                              [{"metric": "accuracy", "min": 0.8}, {"metric": "f1_macro", "min": 0.8, "max": 0.95}])
    assert [c["passed"] for c in checks] == [False, True, True]
    assert checks[0]["message"] == "accuracy 0.7000 < min 0.8000"


SUCC_TR = {"metadata": {"name": "tr"}, "spec": {"labelJobRef": {"name": "lj"}},
           "status": {"phase": "Succeeded", "model": {"uri": "s3://loom/m.onnx", "digest": D}}}


def test_evaluation_fails_naming_metrics_and_passes_otherwise():
    spec = {"trainingRunRef": {"name": "tr"}, "thresholds": [{"metric": "accuracy", "min": 0.9}]}
    obs = evaluation.Observed(trainingrun=SUCC_TR, labeljob=READY_LJ, dataset=READY_DS, job=job("ok"),
                              result={"metrics": {"accuracy": 0.8}, "model": SUCC_TR["status"]["model"], "test": SPLITS["test"]})
    p = evaluation.plan(body("Evaluation", spec), obs, S, NOW)
    assert p.status["phase"] == "Failed" and "accuracy 0.8000 < min 0.9000" in get_condition(p.status["conditions"], "Failed")["message"]
    obs.result["metrics"]["accuracy"] = 0.95
    p = evaluation.plan(body("Evaluation", spec), obs, S, NOW)
    assert p.status["phase"] == "Passed" and p.status["report"]["digest"].startswith("sha256:")


# --- Deployment: the rollout state machine -------------------------------------------------

PASSED = lambda digest: {"metadata": {"name": "ev"}, "status": {"phase": "Passed", "model": {"uri": f"s3://loom/{digest[7:9]}.onnx", "digest": digest}, "report": {"uri": "s3://r", "digest": D}}}  # noqa: E731
DEP_SPEC = {"evaluationRef": {"name": "ev"}, "canary": {"steps": [25], "progressDeadlineSeconds": 60}, "analysis": {"interval": 5}}


def isvc(digest, ready=True, latest_ready=True, canary=None, failure=False, generation=1):
    pred = {"model": {"storageUri": f"s3://loom/{digest[7:9]}.onnx", "env": [{"name": "LOOM_MODEL_DIGEST", "value": digest}]}}
    if canary is not None:
        pred["canaryTrafficPercent"] = canary
    status = {"observedGeneration": generation, "url": "http://m.local",
              "conditions": [{"type": "Ready", "status": "True" if ready else "False"},
                             {"type": "LatestDeploymentReady", "status": "True" if latest_ready else "False"}],
              "components": {"predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r2" if latest_ready else "r1"}}}
    if failure:
        status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad", "lastFailureInfo": {"message": "digest mismatch"}}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "x", "namespace": "team-a", "generation": generation}, "spec": {"predictor": pred}, "status": status}


def test_deployment_refuses_a_model_whose_evaluation_failed():
    ev = {"metadata": {"name": "ev"}, "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "message": "accuracy 0.5 < min 0.8"}]}}
    p = deployment.plan(body("Deployment", DEP_SPEC), deployment.Observed(evaluation=ev), S, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    msg = get_condition(p.status["conditions"], "Failed")["message"]
    assert "has not passed" in msg and "accuracy 0.5" in msg


def test_deployment_first_rollout_then_available():
    b = body("Deployment", DEP_SPEC)
    p = deployment.plan(b, deployment.Observed(evaluation=PASSED(D)), S, NOW)
    assert p.create[0]["kind"] == "InferenceService"
    assert p.create[0]["spec"]["predictor"]["model"]["storageUri"].endswith("aa.onnx")
    b["status"] = p.status
    p = deployment.plan(b, deployment.Observed(evaluation=PASSED(D), isvc=isvc(D)), S, NOW)
    assert p.status["phase"] == "Available" and p.status["model"]["digest"] == D and p.lineage


def _available(digest):
    b = body("Deployment", DEP_SPEC)
    b["status"] = {"phase": "Available", "model": {"uri": "s3://loom/aa.onnx", "digest": digest}, "conditions": []}
    return b


def test_new_model_goes_canary_then_promoted_after_analysis():
    from loom.reconcile.rollout import Round

    b = _available(D)
    p = deployment.plan(b, deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D)), S, NOW)
    assert p.status["phase"] == "Canary" and p.patch
    patch = p.patch[0][1]["spec"]["predictor"]
    assert patch["canaryTrafficPercent"] == 0 and patch["model"]["storageUri"].endswith("bb.onnx")
    b["status"] = p.status
    p = deployment.plan(b, deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D2, canary=0, generation=2)), S, NOW + dt.timedelta(seconds=1))
    assert p.status["phase"] == "Canary" and p.patch[0][1]["spec"]["predictor"]["canaryTrafficPercent"] == 25
    b["status"] = p.status
    obs = deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D2, canary=25, generation=3), round=Round(checks=[]))
    p = deployment.plan(b, obs, S, NOW + dt.timedelta(seconds=7))
    assert p.status["phase"] == "Available" and p.status["model"]["digest"] == D2
    assert p.status["previousModel"]["digest"] == D
    assert p.patch[0][1]["spec"]["predictor"]["canaryTrafficPercent"] is None


def test_failing_canary_rolls_back_and_is_not_retried():
    b = _available(D)
    b["status"].update(deployment.plan(b, deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D)), S, NOW).status)
    obs = deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D2, latest_ready=False, canary=0, failure=True, generation=2))
    p = deployment.plan(b, obs, S, NOW + dt.timedelta(seconds=2))
    assert p.status["phase"] == "RolledBack" and D2 in [m["digest"] for m in p.status["rejectedModels"]]
    rb = get_condition(p.status["conditions"], "RolledBack")
    assert rb["status"] == "True" and "digest mismatch" in rb["message"]
    assert p.patch[0][1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}  # all traffic to the champion
    b["status"] = p.status
    p = deployment.plan(b, deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D2, canary=0, generation=3)), S, NOW + dt.timedelta(seconds=3))
    assert not p.patch and p.status["phase"] == "RolledBack"


def test_canary_that_never_gets_ready_rolls_back_at_deadline():
    b = _available(D)
    b["status"].update(deployment.plan(b, deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D)), S, NOW).status)
    obs = deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D2, latest_ready=False, canary=0, generation=2))
    assert deployment.plan(b, obs, S, NOW + dt.timedelta(seconds=30)).status["phase"] == "Canary"
    p = deployment.plan(b, obs, S, NOW + dt.timedelta(seconds=61))
    assert p.status["phase"] == "RolledBack" and "progressDeadlineSeconds" in get_condition(p.status["conditions"], "RolledBack")["message"]


def test_drifted_inferenceservice_is_restored():
    p = deployment.plan(_available(D), deployment.Observed(evaluation=PASSED(D), isvc=isvc(D2)), S, NOW)
    assert p.patch and p.patch[0][1]["spec"]["predictor"]["model"]["env"][0]["value"] == D


# --- every status a planner writes must pass the CRD's schema, unpruned -------------------

def _schema(kind):
    import yaml
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[2] / "crds").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise AssertionError(kind)


def _assert_admissible(kind, spec, status):
    from loom.local.admission import admit

    pruned: list[str] = []
    obj = {"apiVersion": "loom.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec,
           "status": {k: v for k, v in status.items() if v is not None}}
    errors = admit(_schema(kind), obj, None, pruned)
    assert not errors, [str(e) for e in errors]
    assert not pruned, f"status fields the CRD does not declare: {pruned}"


def test_planner_statuses_fit_the_crd_schemas():
    result = {"version": D, "rows": 30, "columns": ["id", "a"], "manifestUri": "s3://loom/m.json", "splits": SPLITS,
              "objects": [{"uri": "s3://data/iris.csv", "digest": D2, "bytes": 10}]}
    _assert_admissible("Dataset", DS_SPEC, dataset.plan(body("Dataset", DS_SPEC), StepObserved(job=job("ok"), result=result), S, NOW).status)
    ok = {"passed": True, "agreement": {"metric": "fleiss_kappa", "value": 0.8}, "annotators": ["a", "b", "c"], "items": 30,
          "ties": 1, "version": D, "classes": ["a", "b"], "splits": SPLITS}
    lj = labeljob.plan(body("LabelJob", LJ_SPEC), labeljob.Observed(dataset=READY_DS, job=job("ok"), result=ok), S, NOW)
    _assert_admissible("LabelJob", LJ_SPEC, lj.status)
    tr_spec = {"labelJobRef": {"name": "lj"}}
    done = {"status": {"conditions": [{"type": "Succeeded", "status": "True"}], "startTime": "2026-11-22T11:00:00Z"}}
    tr_result = {"model": {"uri": "s3://m", "digest": D}, "metrics": {"val_accuracy": 0.9}, "classes": ["a"], "features": ["f"], "worldSize": 2}
    tr = trainingrun.plan(body("TrainingRun", tr_spec, status={"jobName": "x-g1", "labelVersion": D}),
                          trainingrun.Observed(labeljob=READY_LJ, job=done, result=tr_result), S, NOW)
    _assert_admissible("TrainingRun", tr_spec, tr.status)
    ev_spec = {"trainingRunRef": {"name": "tr"}, "thresholds": [{"metric": "accuracy", "min": 0.9}]}
    obs = evaluation.Observed(trainingrun=SUCC_TR, labeljob=READY_LJ, dataset=READY_DS, job=job("ok"),
                              result={"metrics": {"accuracy": 0.8}, "model": SUCC_TR["status"]["model"], "test": SPLITS["test"]})
    _assert_admissible("Evaluation", ev_spec, evaluation.plan(body("Evaluation", ev_spec), obs, S, NOW).status)
    b = _available(D)
    b["status"].update(deployment.plan(b, deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D)), S, NOW).status)
    _assert_admissible("Deployment", DEP_SPEC, b["status"])
    bad = deployment.Observed(evaluation=PASSED(D2), isvc=isvc(D2, latest_ready=False, canary=0, failure=True, generation=2))
    _assert_admissible("Deployment", DEP_SPEC, deployment.plan(b, bad, S, NOW + dt.timedelta(seconds=2)).status)


def test_planner_lineage_records_join_into_a_chain():
    # What the operator writes for lineage comes from the planners' records alone.
    from loom.lineage.graph import chain
    from loom.lineage.openlineage import build_event, dataset_digest

    def event(record, time):
        return build_event("team-a", record.kind, record.name, record.inputs, record.outputs,
                           run_seed=record.run_key, event_time=time)

    result = {"version": D, "rows": 30, "columns": ["id"], "manifestUri": "s3://loom/m.json", "splits": SPLITS,
              "objects": [{"uri": "s3://data/iris.csv", "digest": D2, "bytes": 10}]}
    ds = event(dataset.plan(body("Dataset", DS_SPEC), StepObserved(job=job("ok"), result=result), S, NOW).lineage[0], "1")
    assert [dataset_digest(i) for i in ds["inputs"]] == [D2]
    assert {dataset_digest(o) for o in ds["outputs"]} == {D}  # the manifest and every split
    done = {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    tr_result = {"model": {"uri": "s3://loom/m.onnx", "digest": "sha256:" + "e" * 64}, "metrics": {}}
    tr = event(trainingrun.plan(body("TrainingRun", {"labelJobRef": {"name": "lj"}}),
                                trainingrun.Observed(labeljob=READY_LJ, job=done, result=tr_result), S, NOW).lineage[0], "2")
    assert [dataset_digest(o) for o in tr["outputs"]] == ["sha256:" + "e" * 64]
    assert chain([ds, tr], "trainingrun/x")["inputs"][0]["producer"]["job"] == "dataset/x"
