"""The Evaluation planner: the leakage proof from lineage, the champion, the verdict. Pure: no cluster."""
from __future__ import annotations

import json

from loom.lineage.openlineage import build_event
from loom.reconcile import evaluation, trainingrun
from loom.reconcile.common import get_condition

from test_planners import NOW, S, _assert_admissible, body, job

D = lambda c: "sha256:" + c * 64  # noqa: E731
DS_SPLITS = {k: {"uri": f"s3://loom/team-a/datasets/iris/v/{k}.csv", "digest": D(c), "rows": 10}
             for k, c in (("train", "1"), ("validation", "2"), ("test", "3"))}
LJ_SPLITS = {k: {"uri": f"s3://loom/team-a/labels/lj/v/{k}.csv", "digest": D(c), "rows": 9}
             for k, c in (("train", "4"), ("validation", "5"), ("test", "6"))}
MODEL = {"uri": "s3://loom/team-a/models/tr/r/model.onnx", "digest": D("7")}
DS = {"metadata": {"name": "iris"}, "spec": {"idColumn": "id"},
      "status": {"phase": "Ready", "version": D("8"), "splits": DS_SPLITS}}
LJ = {"metadata": {"name": "lj"}, "spec": {"datasetRef": {"name": "iris"}, "labelColumn": "label"},
      "status": {"phase": "Ready", "version": D("9"), "datasetVersion": D("8"), "classes": ["a", "b"], "splits": LJ_SPLITS}}
TR = {"metadata": {"name": "tr", "uid": "fedcba9876543210", "generation": 1, "namespace": "team-a"},
      "spec": {"labelJobRef": {"name": "lj"}}, "status": {"phase": "Succeeded", "model": MODEL}}
SPEC = {"trainingRunRef": {"name": "tr"}, "thresholds": [{"metric": "accuracy", "min": 0.8}]}
EVENT_URI = "s3://loom/team-a/lineage/trainingrun/tr/run-1.json"


def tr_event(inputs):
    """A TrainingRun RunEvent as the operator writes it (outputs: the model)."""
    event = build_event("team-a", "trainingrun", "tr", inputs, [MODEL], run_seed="r")
    return dict(json.loads(json.dumps(event)), _uri=EVENT_URI)


def real_tr_event():
    """The event the TrainingRun planner itself records, for the train and validation splits."""
    done = {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    record = trainingrun.plan(body("TrainingRun", {"labelJobRef": {"name": "lj"}}, name="tr"),
                              trainingrun.Observed(labeljob=LJ, job=done, result={"model": MODEL, "metrics": {}}),
                              S, NOW).lineage[0]
    return dict(build_event("team-a", record.kind, record.name, record.inputs, record.outputs, run_seed="r"), _uri=EVENT_URI)


def observed(events, **kw):
    return evaluation.Observed(trainingrun=TR, labeljob=LJ, dataset=DS, training_lineage=events, **kw)


def failed(plan):
    return get_condition(plan.status["conditions"], "Failed")


def test_clean_lineage_creates_the_job_with_the_proof_inputs():
    p = evaluation.plan(body("Evaluation", SPEC, name="ev"), observed([real_tr_event()]), S, NOW)
    assert p.status["phase"] == "Evaluating" and [c["kind"] for c in p.create] == ["Job"]
    env = {e["name"]: e.get("value") for e in p.create[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    task = json.loads(env["LOOM_TASK"])
    assert task["test"] == LJ_SPLITS["test"] and task["datasetTest"] == DS_SPLITS["test"]
    assert {i["digest"] for i in task["trainingInputs"]} == {D("4"), D("5")}
    assert all(i["event"] == EVENT_URI for i in task["trainingInputs"])
    assert task["versions"] == {"dataset": D("8"), "labels": D("9")}
    assert task["outputPrefix"] == "s3://loom/team-a/evaluations/ev/01234567-g1/"
    assert task["spec"]["latency"] == {"batchSize": 32, "iterations": 200, "warmup": 10}
    assert p.status["testSplit"] == LJ_SPLITS["test"] and p.status["datasetTestSplit"] == DS_SPLITS["test"]


def test_labelled_test_split_among_training_inputs_is_leakage():
    leaky = tr_event([LJ_SPLITS["train"], LJ_SPLITS["test"]])
    p = evaluation.plan(body("Evaluation", SPEC), observed([leaky]), S, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    cond = failed(p)
    assert cond["reason"] == "Leakage"
    assert D("6") in cond["message"] and EVENT_URI in cond["message"] and LJ_SPLITS["test"]["uri"] in cond["message"]
    assert "LabelJob lj status.splits.test" in cond["message"]
    assert p.status["checks"] == [{"metric": "leakage", "bound": "no shared digest or row", "passed": False,
                                   "message": cond["message"]}]
    assert get_condition(p.status["conditions"], "Passed")["status"] == "False"
    assert [e.reason for e in p.events] == ["Leakage"]


def test_dataset_test_split_among_training_inputs_is_leakage():
    p = evaluation.plan(body("Evaluation", SPEC), observed([tr_event([DS_SPLITS["test"]])]), S, NOW)
    assert failed(p)["reason"] == "Leakage" and D("3") in failed(p)["message"]
    assert "Dataset iris status.splits.test" in failed(p)["message"]


def test_only_the_events_that_produced_this_model_count():
    other_model = {"uri": "s3://loom/old.onnx", "digest": D("a")}
    old = dict(build_event("team-a", "trainingrun", "tr", [LJ_SPLITS["test"]], [other_model], run_seed="old"), _uri="x")
    p = evaluation.plan(body("Evaluation", SPEC), observed([old, real_tr_event()]), S, NOW)
    assert p.status["phase"] == "Evaluating"  # an older run's inputs are not this model's


def test_no_lineage_for_the_model_fails_and_an_unreadable_lineage_waits():
    p = evaluation.plan(body("Evaluation", SPEC), observed([]), S, NOW)
    assert failed(p)["reason"] == "LineageMissing" and MODEL["digest"] in failed(p)["message"] and p.create == []
    p = evaluation.plan(body("Evaluation", SPEC), observed([], lineage_error="S3Error: timeout"), S, NOW)
    assert p.status["phase"] == "Pending" and p.create == []
    assert get_condition(p.status["conditions"], "Ready")["reason"] == "LineageUnavailable"


def test_labels_of_another_dataset_version_are_refused():
    lj = json.loads(json.dumps(LJ))
    lj["status"]["datasetVersion"] = D("0")
    p = evaluation.plan(body("Evaluation", SPEC), evaluation.Observed(trainingrun=TR, labeljob=lj, dataset=DS,
                                                                     training_lineage=[real_tr_event()]), S, NOW)
    assert failed(p)["reason"] == "LineageMismatch" and D("0") in failed(p)["message"]


def test_waits_for_the_dataset():
    p = evaluation.plan(body("Evaluation", SPEC), evaluation.Observed(trainingrun=TR, labeljob=LJ), S, NOW)
    assert p.status["phase"] == "Pending" and "Dataset 'iris'" in get_condition(p.status["conditions"], "Ready")["message"]


CHAMP = {"deploymentRef": {"name": "iris"}, "metric": "f1_macro", "tolerance": 0.02}


def _task(plan):
    env = {e["name"]: e.get("value") for e in plan.create[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["LOOM_TASK"])


def test_champion_is_the_model_the_deployment_serves_now():
    spec = dict(SPEC, champion=CHAMP)
    served = {"metadata": {"name": "iris"}, "status": {"model": {"uri": "s3://loom/champ.onnx", "digest": D("c")}}}
    p = evaluation.plan(body("Evaluation", spec), observed([real_tr_event()], champion=served), S, NOW)
    assert _task(p)["champion"] == {"deployment": "iris", "metric": "f1_macro", "tolerance": 0.02,
                                    "model": {"uri": "s3://loom/champ.onnx", "digest": D("c")}}
    assert p.status["champion"]["model"]["digest"] == D("c")
    p = evaluation.plan(body("Evaluation", spec), observed([real_tr_event()], champion=None), S, NOW)
    assert _task(p)["champion"]["reason"] == "Deployment 'iris' does not exist"


def test_champion_in_another_namespace_is_refused():
    spec = dict(SPEC, champion={**CHAMP, "deploymentRef": {"name": "iris", "namespace": "team-b"}})
    p = evaluation.plan(body("Evaluation", spec), observed([real_tr_event()]), S, NOW)
    assert failed(p)["reason"] == "CrossNamespaceReference" and p.create == []
    assert "spec.champion.deploymentRef.namespace 'team-b'" in failed(p)["message"]


FULL_SPEC = {
    "trainingRunRef": {"name": "tr"},
    "thresholds": [{"metric": "accuracy", "min": 0.8}, {"metric": "latency_p99_ms", "max": 50}],
    "slices": [{"column": "region", "minRows": 3, "thresholds": [{"metric": "accuracy", "min": 0.7}]}],
    "champion": CHAMP,
}
CARD = {"uri": "s3://loom/team-a/evaluations/x/r/model-card.json", "digest": D("d"),
        "markdownUri": "s3://loom/team-a/evaluations/x/r/model-card.md", "markdownDigest": D("e")}


def result(**over):
    r = {"model": MODEL, "test": LJ_SPLITS["test"], "datasetTest": DS_SPLITS["test"],
         "metrics": {"accuracy": 0.9, "f1_macro": 0.88, "latency_p99_ms": 3.2},
         "slices": [{"column": "region", "value": "north", "rows": 5, "skipped": False, "metrics": {"accuracy": 1.0}},
                    {"column": "region", "value": "south", "rows": 4, "skipped": False, "metrics": {"accuracy": 0.75}},
                    {"column": "region", "value": "west", "rows": 1, "skipped": True}],
         "champion": {"deployment": "iris", "metric": "f1_macro", "tolerance": 0.02,
                      "model": {"uri": "s3://loom/champ.onnx", "digest": D("c")}, "value": 0.89},
         "leakage": {"passed": True, "message": "clean"},
         "leakageCheck": {"metric": "leakage", "bound": "no shared digest or row", "passed": True, "message": "clean"},
         "modelCard": CARD}
    r.update(over)
    return r


def verdict(res):
    obs = evaluation.Observed(job=job("ok"), result=res)
    return evaluation.plan(body("Evaluation", FULL_SPEC), obs, S, NOW)


def test_verdict_one_line_per_check_and_fits_the_crd():
    p = verdict(result())
    assert p.status["phase"] == "Passed"
    assert [c["metric"] for c in p.status["checks"]] == [
        "leakage", "accuracy", "latency_p99_ms", "accuracy[region=north]", "accuracy[region=south]", "champion.f1_macro"]
    assert all({"metric", "bound", "passed", "message"} <= set(c) for c in p.status["checks"])
    assert p.status["modelCard"] == CARD and p.status["champion"]["value"] == 0.89
    assert get_condition(p.status["conditions"], "Passed")["status"] == "True"
    _assert_admissible("Evaluation", FULL_SPEC, p.status)
    rec = p.lineage[0]
    assert {o["uri"] for o in rec.outputs} >= {CARD["uri"], CARD["markdownUri"]}
    assert {i["digest"] for i in rec.inputs} == {MODEL["digest"], D("6"), D("3"), D("c")}


def test_verdict_reasons():
    p = verdict(result(metrics={"accuracy": 0.9, "f1_macro": 0.80, "latency_p99_ms": 3.2}))
    assert failed(p)["reason"] == "ChampionRegression" and "champion.f1_macro" in failed(p)["message"]
    p = verdict(result(metrics={"accuracy": 0.7, "f1_macro": 0.88, "latency_p99_ms": 3.2}))
    assert failed(p)["reason"] == "ThresholdNotMet" and "accuracy 0.7000 < min 0.8000" in failed(p)["message"]
    p = verdict(result(champion={"deployment": "iris", "metric": "f1_macro", "tolerance": 0.02,
                                 "reason": "Deployment 'iris' serves no model yet"}))
    champ = p.status["checks"][-1]
    assert p.status["phase"] == "Passed" and champ["passed"] and champ["message"].startswith("no champion")
    leak = {"passed": False, "message": "3 test row(s) (id 1, 2, 3) ... appear in s3://x"}
    p = verdict({"model": MODEL, "test": LJ_SPLITS["test"], "leakage": leak,
                 "leakageCheck": {"metric": "leakage", "bound": "", "passed": False, "message": leak["message"]}})
    assert failed(p)["reason"] == "Leakage" and "appear in s3://x" in failed(p)["message"]
    _assert_admissible("Evaluation", FULL_SPEC, p.status)


def test_a_new_generation_starts_without_the_old_verdict():
    old = {"phase": "Failed", "observedGeneration": 1, "metrics": {"accuracy": 0.5}, "checks": [{"metric": "accuracy", "passed": False}],
           "modelCard": {"uri": "s3://old"}, "report": {"uri": "s3://r", "digest": D("f")}}
    p = evaluation.plan(body("Evaluation", SPEC, status=old, generation=2), observed([real_tr_event()]), S, NOW)
    assert p.status["phase"] == "Evaluating" and p.create[0]["metadata"]["name"].endswith("eval-g2")
    assert not {"metrics", "checks", "modelCard", "report"} & set(p.status)


def test_a_frozen_test_split_kept_from_another_version_counts_too():
    ds = json.loads(json.dumps(DS))
    ds["status"]["frozenTest"] = {"uri": "s3://loom/team-a/datasets/iris/old/test.csv", "digest": D("b"), "rows": 10}
    leaky = tr_event([LJ_SPLITS["train"], ds["status"]["frozenTest"]])
    p = evaluation.plan(body("Evaluation", SPEC), evaluation.Observed(trainingrun=TR, labeljob=LJ, dataset=ds,
                                                                     training_lineage=[leaky]), S, NOW)
    assert failed(p)["reason"] == "Leakage" and "Dataset iris status.frozenTest" in failed(p)["message"]
