"""The progressive-delivery state machine and the Deployment planner around it. Pure: no cluster."""
from __future__ import annotations

import datetime as dt

from loom.api import parse_spec
from loom.config import Settings
from loom.reconcile import analysis, deployment, rollout as ro
from loom.reconcile.common import get_condition

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
S = Settings(bucket="loom", s3_endpoint="http://s3:9000")
D, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
M2 = {"uri": "s3://loom/bb.onnx", "digest": D2}
ERR = {"name": "error-rate", "thresholdRange": {"max": 1}}
P99 = {"name": "latency-p99", "thresholdRange": {"max": 100}}


def spec(**kw):
    raw = {"evaluationRef": {"name": "ev"}, "canary": {"steps": [10, 30, 60], "progressDeadlineSeconds": 60},
           "analysis": {"interval": 5, "failureLimit": 2, "metrics": [ERR, P99]}}
    for key, value in kw.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec("Deployment", raw).model_dump(by_alias=True, mode="json", exclude_none=True)


def at(seconds):
    return NOW + dt.timedelta(seconds=seconds)


def checks(err=0.0, p99=20.0):
    return [analysis.judge(ERR, err), analysis.judge(P99, p99)]


READY = ro.Canary(ready=True)


def started(sp, t=0):
    r = ro.start(M2, parse_spec("Deployment", {"evaluationRef": {"name": "ev"}, "canary": sp["canary"]}).canary.weights(), at(t))
    r, d = ro.step(sp, r, READY, None, at(t))
    assert d.action == "weight" and d.weight == r["steps"][0]
    return r


# --- the state machine --------------------------------------------------------------------------

def test_good_canary_is_promoted_through_every_step():
    sp = spec()
    r = started(sp)
    weights = [r["weight"]]
    t = 0
    while True:
        t += 5
        assert ro.due(sp, r, True, at(t)) == {"metrics": True, "webhooks": []}
        r, d = ro.step(sp, r, READY, ro.Round(checks=checks()), at(t))
        if d.action == "promote":
            break
        assert d.action == "weight"
        weights.append(d.weight)
    assert weights == [10, 30, 60] and r["stepsPassed"] == [10, 30, 60]
    assert r["analysisRounds"] == 3 and r["failedChecks"] == 0 and r["result"] == "Promoted"


def test_no_round_before_the_interval():
    sp = spec()
    r = started(sp)
    assert ro.due(sp, r, True, at(4)) is None
    assert ro.due(sp, r, False, at(10)) is None  # never measure a canary that is not Ready
    r2, d = ro.step(sp, r, READY, None, at(4))
    assert d.action == "hold" and r2["analysisRounds"] == 0


def test_bad_canary_rolls_back_after_failure_limit_rounds():
    sp = spec(analysis={"failureLimit": 2})
    r = started(sp)
    r, d = ro.step(sp, r, READY, ro.Round(checks=checks(p99=480.0)), at(5))
    assert d.action == "hold" and d.reason == "AnalysisFailed" and r["failedChecks"] == 1
    r, d = ro.step(sp, r, READY, ro.Round(checks=checks(p99=510.0)), at(10))
    assert d.action == "rollback" and d.reason == "AnalysisFailed"
    assert r["analysisRounds"] == 2 == sp["analysis"]["failureLimit"] and r["result"] == "RolledBack"
    assert d.check["metric"] == "latency-p99" and d.check["value"] == 510.0 and d.check["bound"] == "<= 100"
    assert "latency-p99 510 outside <= 100" in d.message


def test_inconclusive_pauses_the_step_then_the_deadline_rolls_back():
    sp = spec()
    r = started(sp)
    nodata = [analysis.judge(ERR, None, "0 canary request(s)"), analysis.judge(P99, None, "no data")]
    r, d = ro.step(sp, r, READY, ro.Round(checks=nodata), at(5))
    assert d.action == "hold" and d.reason == "Inconclusive" and r["failedChecks"] == 0 and r["weight"] == 10
    r, d = ro.step(sp, r, READY, ro.Round(checks=checks()), at(10))  # data arrives: the step passes
    assert d.action == "weight" and d.weight == 30
    for t in (15, 20, 40, 60):
        r, d = ro.step(sp, r, READY, ro.Round(checks=nodata), at(t))
        assert d.action == "hold"
    r, d = ro.step(sp, r, READY, ro.Round(checks=nodata), at(75))
    assert d.action == "rollback" and d.reason == "ProgressDeadlineExceeded" and r["inconclusiveRounds"] == 6


def test_canary_never_ready_rolls_back_at_the_deadline_and_load_failure_at_once():
    sp = spec()
    r = ro.start(M2, [10, 30, 60], NOW)
    r2, d = ro.step(sp, r, ro.Canary(), None, at(59))
    assert d.action == "hold" and r2["weight"] == 0
    _, d = ro.step(sp, r, ro.Canary(), None, at(61))
    assert d.action == "rollback" and d.reason == "ProgressDeadlineExceeded"
    _, d = ro.step(sp, r, ro.Canary(failure="digest mismatch"), None, at(1))
    assert d.action == "rollback" and "digest mismatch" in d.message


def test_pre_rollout_webhook_gates_the_first_step_and_counts_failures():
    hook = {"name": "smoke", "type": "pre-rollout", "url": "http://h/x"}
    sp = spec(analysis={"webhooks": [hook], "failureLimit": 2})
    r = ro.start(M2, [10, 30, 60], NOW)
    assert ro.due(sp, r, True, at(0))["webhooks"][0]["name"] == "smoke"
    r, d = ro.step(sp, r, READY, None, at(0))
    assert d.action == "hold" and r["weight"] == 0
    r, d = ro.step(sp, r, READY, ro.Round(webhooks={"smoke": {"type": "pre-rollout", "ok": False, "message": "HTTP 500"}}), at(1))
    assert d.action == "hold" and r["failedChecks"] == 1 and r["weight"] == 0
    assert ro.due(sp, r, True, at(3)) is None and ro.due(sp, r, True, at(6)) is not None
    r, d = ro.step(sp, r, READY, ro.Round(webhooks={"smoke": {"type": "pre-rollout", "ok": True}}), at(6))
    assert d.action == "weight" and d.weight == 10 and r["preRolloutPassed"]
    r2, d = ro.step(sp, ro.start(M2, [10], NOW), READY,
                    ro.Round(webhooks={"smoke": {"type": "pre-rollout", "ok": False, "message": "HTTP 500"}}),
                    at(1))
    r2, d = ro.step(sp, r2, READY, ro.Round(webhooks={"smoke": {"type": "pre-rollout", "ok": False, "message": "HTTP 503"}}), at(7))
    assert d.action == "rollback" and d.reason == "PreRolloutWebhookFailed" and "HTTP 503" in d.message


def test_confirm_promotion_waits_until_the_webhook_says_yes():
    hook = {"name": "approve", "type": "confirm-promotion", "url": "http://h/x"}
    sp = spec(canary={"steps": [50]}, analysis={"webhooks": [hook]})
    r = started(sp)
    r, d = ro.step(sp, r, READY, ro.Round(checks=checks()), at(5))
    assert d.action == "hold" and d.reason == "WaitingForConfirmation" and r["awaitingPromotion"]
    assert ro.due(sp, r, True, at(10)) == {"metrics": False, "webhooks": [hook | {"timeoutSeconds": 10, "metadata": {}}]}
    for t in (10, 100, 1000):  # a human gate: waiting is not a stalled rollout
        r, d = ro.step(sp, r, READY, ro.Round(webhooks={"approve": {"type": "confirm-promotion", "ok": False}}), at(t))
        assert d.action == "hold"
    r, d = ro.step(sp, r, READY, ro.Round(webhooks={"approve": {"type": "confirm-promotion", "ok": True}}), at(1005))
    assert d.action == "promote"


def test_rollback_webhook_abort_and_manual_promote():
    hook = {"name": "stop", "type": "rollback", "url": "http://h/x"}
    sp = spec(analysis={"webhooks": [hook]})
    r = started(sp)
    assert ro.due(sp, r, True, at(5))["webhooks"][0]["name"] == "stop"
    _, d = ro.step(sp, r, READY, ro.Round(checks=checks(), webhooks={"stop": {"type": "rollback", "ok": True}}), at(5))
    assert d.action == "rollback" and d.reason == "RollbackWebhook"
    _, d = ro.step(sp, r, READY, ro.Round(checks=checks(), webhooks={"stop": {"type": "rollback", "ok": False}}), at(5))
    assert d.action == "weight"
    r2, d = ro.step(sp, r, READY, None, at(1), abort=True)
    assert d.action == "rollback" and d.reason == "Aborted" and r2["result"] == "Aborted"
    _, d = ro.step(sp, r, READY, None, at(1), promote=True)
    assert d.action == "promote" and d.reason == "ManualPromotion"


def test_step_weight_and_max_weight_make_the_steps():
    def weights(c):
        return parse_spec("Deployment", {"evaluationRef": {"name": "e"}, "canary": c}).canary.weights()
    assert weights({"stepWeight": 20, "maxWeight": 50}) == [20, 40, 50]
    assert weights({"stepWeight": 25, "maxWeight": 50}) == [25, 50]
    assert weights({"stepWeight": 100}) == [100]
    assert weights({"steps": [5, 50, 100]}) == [5, 50, 100]


def test_analysis_judges_builtin_metrics():
    stats = {"requests": 20, "errors": 3, "latencyMs": {"p50": 4.0, "p95": 9.0, "p99": 12.5}}
    assert analysis.builtin_value("error-rate", stats, 5) == (15.0, None)
    assert analysis.builtin_value("latency-p99", stats, 5) == (12.5, None)
    value, why = analysis.builtin_value("error-rate", {"requests": 2}, 5)
    assert value is None and "fewer than minRequests 5" in why
    assert analysis.judge(ERR, 15.0)["result"] == "fail"
    assert analysis.judge({"name": "x", "thresholdRange": {"min": 1, "max": 2}}, 1.5)["bound"] == "1 <= x <= 2"
    assert analysis.judge(ERR, float("nan"))["result"] == "inconclusive"


# --- the planner around it ------------------------------------------------------------------------

def body(sp_raw=None, status=None, annotations=None):
    meta = {"name": "iris", "namespace": "team-a", "uid": "0123456789abcdef", "generation": 1}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment", "metadata": meta,
            "spec": sp_raw or {"evaluationRef": {"name": "ev"}, "canary": {"steps": [10, 50]},
                               "analysis": {"interval": 5, "failureLimit": 2, "metrics": [P99]}},
            "status": status if status is not None else {"phase": "Available", "model": {"uri": "s3://loom/aa.onnx", "digest": D}, "conditions": []}}


def passed(digest, tr_digest=None):
    ev = {"metadata": {"name": "ev", "generation": 1}, "spec": {"trainingRunRef": {"name": "tr"}},
          "status": {"phase": "Passed", "observedGeneration": 1, "model": {"uri": f"s3://loom/{digest[7:9]}.onnx", "digest": digest}}}
    tr = {"metadata": {"name": "tr"}, "status": {"model": {"uri": "s3://x", "digest": tr_digest or digest}}}
    return ev, tr


def isvc(digest, canary=None, ready=True, generation=1, rev="iris-predictor-00002"):
    pred = {"model": {"storageUri": f"s3://loom/{digest[7:9]}.onnx", "env": [{"name": "LOOM_MODEL_DIGEST", "value": digest}]}}
    if canary is not None:
        pred["canaryTrafficPercent"] = canary
    cond = "True" if ready else "False"
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "team-a", "generation": generation}, "spec": {"predictor": pred},
            "status": {"observedGeneration": generation, "url": "http://m.local",
                       "conditions": [{"type": "Ready", "status": "True"}, {"type": "LatestDeploymentReady", "status": cond}],
                       "components": {"predictor": {"latestCreatedRevision": rev, "latestReadyRevision": rev if ready else "r1"}}}}


def obs(digest, isvc_obj, rnd=None, tr_digest=None):
    ev, tr = passed(digest, tr_digest)
    return deployment.Observed(evaluation=ev, trainingrun=tr, isvc=isvc_obj, round=rnd)


def test_refuses_an_evaluation_for_another_model_digest():
    p = deployment.plan(body(status={}), obs(D, None, tr_digest=D2), S, NOW)
    assert p.status["phase"] == "Failed" and not p.create
    failed = get_condition(p.status["conditions"], "Failed")
    assert failed["reason"] == "EvaluationModelMismatch" and "has not been evaluated" in failed["message"]
    b = body(sp_raw={"evaluationRef": {"name": "ev"}, "modelDigest": D2}, status={})
    p = deployment.plan(b, obs(D, None), S, NOW)
    assert get_condition(p.status["conditions"], "Failed")["reason"] == "EvaluationModelMismatch"
    # With a champion serving, the mismatch blocks the rollout and keeps serving.
    p = deployment.plan(body(), obs(D2, isvc(D), tr_digest=D), S, NOW)
    assert p.status["phase"] == "Available" and not p.patch
    assert get_condition(p.status["conditions"], "Progressing")["reason"] == "EvaluationModelMismatch"


def write_status(b, desired):
    """What the operator and the API server do with a planned status: a JSON merge patch of the
    changed top-level keys (loom.operator.status_patch), applied as the API server applies it."""
    from loom.local.patching import merge_patch

    current = b.get("status") or {}
    patch = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    b["status"] = merge_patch(current, patch)


def _rollout(b, steps_obs, digest=D2):
    """Feed the planner a sequence of (isvc, round, seconds); return the plans."""
    plans = []
    for isvc_obj, rnd, t in steps_obs:
        p = deployment.plan(b, obs(digest, isvc_obj, rnd), S, at(t))
        write_status(b, p.status)
        plans.append(p)
    return plans


def test_planner_promotes_step_by_step_and_writes_the_champion():
    b = body()
    good = ro.Round(checks=[analysis.judge(P99, 8.0)])
    plans = _rollout(b, [(isvc(D), None, 0), (isvc(D2, 0, generation=2), None, 1), (isvc(D2, 10, generation=3), good, 6),
                         (isvc(D2, 50, generation=4), good, 11)])
    assert [p.patch[0][1]["spec"]["predictor"]["canaryTrafficPercent"] for p in plans] == [0, 10, 50, None]
    st = b["status"]
    assert st["phase"] == "Available" and st["model"]["digest"] == D2 and st["previousModel"]["digest"] == D
    assert st["rollout"]["stepsPassed"] == [10, 50] and st["rollout"]["result"] == "Promoted"
    assert plans[-1].lineage and plans[-1].events[-1].reason == "Promoted"
    # the champion stays put afterwards: nothing to patch
    assert not deployment.plan(b, obs(D2, isvc(D2, generation=5)), S, at(12)).patch


def test_planner_rollback_names_metric_value_and_bound_and_routes_everything_back():
    b = body()
    slow = ro.Round(checks=[analysis.judge(P99, 480.0)])
    plans = _rollout(b, [(isvc(D), None, 0), (isvc(D2, 0, generation=2), None, 1), (isvc(D2, 10, generation=3), slow, 6),
                         (isvc(D2, 10, generation=3), slow, 11)])
    st = b["status"]
    assert st["phase"] == "RolledBack" and st["model"]["digest"] == D and st["rollout"]["analysisRounds"] == 2
    rb = get_condition(st["conditions"], "RolledBack")
    assert rb["status"] == "True" and rb["reason"] == "AnalysisFailed"
    assert "latency-p99 480 outside <= 100" in rb["message"]
    last = plans[-1]
    assert last.patch[0][1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert last.events[0].type == "Warning" and last.events[0].reason == "RolledBack"
    lin = last.lineage[0]
    assert lin.facets["metric"] == "latency-p99" and lin.facets["value"] == 480.0 and lin.facets["bound"] == "<= 100"
    assert lin.inputs[0]["digest"] == D  # the champion serves; the rejected model is a facet
    # the rejected model is not retried, and the rolled-back InferenceService is left as it is
    p = deployment.plan(b, obs(D2, isvc(D2, 0, generation=4)), S, at(12))
    assert not p.patch and p.status["phase"] == "RolledBack"


def test_operator_restart_mid_rollout_reapplies_the_current_step():
    b = body()
    _rollout(b, [(isvc(D), None, 0), (isvc(D2, 0, generation=2), None, 1)])
    assert b["status"]["rollout"]["weight"] == 10
    # The patch to 10 % was lost (a crash between status and patch): the next pass applies it again.
    p = deployment.plan(b, obs(D2, isvc(D2, 0, generation=2)), S, at(2))
    assert p.patch[0][1]["spec"]["predictor"]["canaryTrafficPercent"] == 10 and p.status["rollout"]["weight"] == 10


def test_promote_and_abort_annotations_act_once_per_value():
    b = body()
    _rollout(b, [(isvc(D), None, 0), (isvc(D2, 0, generation=2), None, 1)])
    b["metadata"]["annotations"] = {"loom.dev/abort": "true"}
    p = deployment.plan(b, obs(D2, isvc(D2, 10, generation=3)), S, at(2))
    assert p.status["phase"] == "RolledBack" and p.status["abortHandled"] == "true"
    assert get_condition(p.status["conditions"], "RolledBack")["reason"] == "Aborted"
    assert "loom.dev/abort" not in str(p.patch)  # the annotation stays: GitOps owns metadata
    # a later model: the old annotation value is not acted on again
    b["status"] = p.status
    ev, tr = passed("sha256:" + "c" * 64)
    p = deployment.plan(b, deployment.Observed(evaluation=ev, trainingrun=tr, isvc=isvc(D2, 0, generation=4)), S, at(3))
    assert p.status["phase"] == "Canary"
    b2 = body(annotations={"loom.dev/promote": "now"})
    _rollout(b2, [(isvc(D), None, 0)])
    assert "promoteHandled" not in b2["status"]  # the canary is not Ready yet: the promote waits
    p = deployment.plan(b2, obs(D2, isvc(D2, 0, generation=2)), S, at(1))
    assert p.status["phase"] == "Available" and p.status["model"]["digest"] == D2 and p.status["promoteHandled"] == "now"


def test_raw_deployment_mode_drives_spec_canary():
    raw = {"evaluationRef": {"name": "ev"}, "mode": "RawDeployment", "canary": {"steps": [25]}, "analysis": {"interval": 5}}
    b = body(sp_raw=raw, status={})
    p = deployment.plan(b, obs(D, None), S, NOW)
    created = p.create[0]
    assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert created["spec"]["predictor"]["name"] == "m-aaaaaaaaaaaa"
    b = body(sp_raw=raw)
    stable = isvc(D)
    stable["spec"]["predictor"]["name"] = "m-aaaaaaaaaaaa"
    p = deployment.plan(b, obs(D2, stable), S, NOW)
    entry = p.patch[0][1]["spec"]["canary"][0]
    assert entry["trafficPercent"] == 0 and entry["predictor"]["name"] == "m-bbbbbbbbbbbb"
    b["status"] = p.status
    with_canary = isvc(D, generation=2)
    with_canary["spec"]["canary"] = [{"trafficPercent": 0, "predictor": entry["predictor"]}]
    with_canary["status"]["conditions"].append({"type": "CanaryReady", "status": "True"})
    p = deployment.plan(b, obs(D2, with_canary), S, at(1))
    assert p.patch[0][1]["spec"]["canary"][0]["trafficPercent"] == 25
    b["status"] = p.status
    with_canary["spec"]["canary"][0]["trafficPercent"] = 25
    p = deployment.plan(b, obs(D2, with_canary, ro.Round(checks=[])), S, at(7))
    promoted = p.patch[0][1]["spec"]
    assert promoted["canary"] is None and promoted["predictor"]["name"] == "m-bbbbbbbbbbbb"
    assert p.status["model"]["digest"] == D2


def test_rollout_statuses_fit_the_crd_schema():
    from test_planners import _assert_admissible

    b = body()
    _rollout(b, [(isvc(D), None, 0), (isvc(D2, 0, generation=2), None, 1),
                 (isvc(D2, 10, generation=3), ro.Round(checks=[analysis.judge(P99, 480.0)]), 6)])
    _assert_admissible("Deployment", b["spec"], b["status"])
    _rollout(b, [(isvc(D2, 10, generation=3), ro.Round(checks=[analysis.judge(P99, None, "no data")]), 11),
                 (isvc(D2, 10, generation=3), ro.Round(checks=[analysis.judge(P99, 500.0)]), 16)])
    _assert_admissible("Deployment", b["spec"], b["status"])


def test_an_evaluation_in_another_namespace_is_refused():
    b = body(sp_raw={"evaluationRef": {"name": "ev", "namespace": "team-b"}}, status={})
    p = deployment.plan(b, obs(D, None), S, NOW)
    failed = get_condition(p.status["conditions"], "Failed")
    assert p.status["phase"] == "Failed" and failed["reason"] == "CrossNamespaceReference" and "team-b" in failed["message"]
    assert not p.create and not p.patch


def test_a_second_rollout_starts_clean_after_the_first_one_ended():
    """Status is merge-patched: a new rollout must clear the last one's result and last round."""
    good = ro.Round(checks=[analysis.judge(P99, 8.0)])
    b = body()
    _rollout(b, [(isvc(D), None, 0), (isvc(D2, 0, generation=2), None, 1), (isvc(D2, 10, generation=3), good, 6),
                 (isvc(D2, 50, generation=4), good, 11)])
    assert b["status"]["rollout"]["result"] == "Promoted"
    D3 = "sha256:" + "c" * 64
    _rollout(b, [(isvc(D2, generation=5), None, 20), (isvc(D3, 0, generation=6), None, 21)], digest=D3)
    r = b["status"]["rollout"]
    assert "result" not in r and "lastAnalysisAt" not in r and r["weight"] == 10 and r["stepsPassed"] == []
    sp = b["spec"]
    dumped = parse_spec("Deployment", sp).model_dump(by_alias=True, mode="json", exclude_none=True)
    assert ro.due(dumped, r, True, at(27)) == {"metrics": True, "webhooks": []}
    _rollout(b, [(isvc(D3, 10, generation=7), ro.Round(checks=[analysis.judge(P99, 480.0)]), 27)], digest=D3)
    assert b["status"]["rollout"]["analysisRounds"] == 1 and b["status"]["rollout"]["failedChecks"] == 1
