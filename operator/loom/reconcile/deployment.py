"""Deployment: serve the evaluated model through a KServe InferenceService, and roll
later models out progressively (reconcile/rollout.py), promoting or rolling back.

The state of a rollout lives in the Deployment's status (champion, rollout step,
analysis counters, rejected models), so an operator restart picks it up where it
was. The operator never writes the Deployment's spec or metadata: manual promote
and abort annotations are recorded as handled in status.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loom.api import parse_spec
from loom.backends import inferenceservice as isvcs
from loom.config import Settings
from loom.reconcile import rollout as ro
from loom.reconcile.common import (
    Event, LineageRecord, Plan, StatusBuilder, get_condition, now_iso, owner_reference, parse_time,
)
from loom.reconcile.steps import dependency_problem, labels_for, read_spec

PROMOTE, ABORT = "loom.dev/promote", "loom.dev/abort"


@dataclass
class Observed:
    evaluation: dict[str, Any] | None = None
    isvc: dict[str, Any] | None = None
    trainingrun: dict[str, Any] | None = None  # the Evaluation's TrainingRun: is the evaluated model still its model?
    round: ro.Round | None = None  # metrics and webhooks of a due analysis round (the kopf layer ran them)


def _short(digest: str | None) -> str:
    return (digest or "")[:19]


def steps_of(dumped: dict[str, Any]) -> list[int]:
    """The traffic % of each step (spec.canary.steps, or stepWeight up to maxWeight)."""
    return parse_spec("Deployment", dumped).canary.weights()


def mode_of(dumped: dict[str, Any], isvc: dict[str, Any] | None) -> str:
    return isvcs.deployment_mode(dumped.get("mode"), isvc)


def canary_state(isvc: dict[str, Any] | None, mode: str, canary_digest: str | None) -> ro.Canary:
    """Is the canary model's revision Ready (or failed)? Only from a status that saw the current spec."""
    if not isvc or not canary_digest:
        return ro.Canary()
    state = isvcs.isvc_state(isvc)
    fresh = state["observed_generation"] in (None, isvc["metadata"].get("generation"))
    routed = isvcs.isvc_models(isvc, mode)["canary"] == canary_digest
    if not (fresh and routed):
        return ro.Canary()
    if isvcs.is_raw(mode):
        name = isvcs.predictor_name(canary_digest)
        per = next((c for c in (isvc.get("status") or {}).get("canaryStatuses") or [] if c.get("name") == name), None)
        ready = per.get("ready") if per is not None else state["canary_ready"]
        return ro.Canary(ready=bool(ready), failure=state["failure"])
    return ro.Canary(ready=bool(state["latest_ready"]), failure=state["failure"])


def _lineage(body: dict[str, Any], model: dict[str, str], evaluation: dict[str, Any] | None, now: dt.datetime,
             action: str = "promote", facets: dict[str, Any] | None = None) -> LineageRecord:
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    report = ((evaluation or {}).get("status") or {}).get("report")
    inputs = [{"uri": model["uri"], "digest": model["digest"]}]
    if report and action == "promote":
        inputs.append({"uri": report["uri"], "digest": report["digest"]})
    key = f"{body['metadata']['uid'][:8]}-{model['digest'][7:19]}"
    if action != "promote":
        key += f"-{action}-{(facets or {}).get('rejectedModel', {}).get('digest', '')[7:19]}"
    return LineageRecord(
        kind="deployment", name=name, run_key=key,
        inputs=inputs, outputs=[{"uri": f"kserve://{ns}/{name}", "digest": model["digest"]}],
        facets={"evaluation": ((evaluation or {}).get("metadata") or {}).get("name"), "action": action,
                f"{'promoted' if action == 'promote' else 'rolledBack'}At": now_iso(now), **(facets or {})},
    )


def _eval_summary(evaluation: dict[str, Any] | None) -> str:
    ready = get_condition(((evaluation or {}).get("status") or {}).get("conditions"), "Ready") or {}
    return ready.get("message") or ready.get("reason") or "not passed"


def desired_model(dumped: dict[str, Any], observed: Observed) -> tuple[dict[str, str] | None, tuple[str, str, bool] | None]:
    """The model the spec asks for, or (None, (reason, message, fatal)): only a model whose
    Evaluation passed, for that very model digest (the TrainingRun's current model, the pin)."""
    eval_name = dumped["evaluationRef"]["name"]
    problem = dependency_problem(observed.evaluation, "Evaluation", eval_name, {"Passed"})
    if problem:
        reason, message, fatal = problem
        if fatal:
            reason, message = "EvaluationNotPassed", f"refused: Evaluation {eval_name!r} has not passed ({_eval_summary(observed.evaluation)})"
        return None, (reason, message, fatal)
    ev_status = observed.evaluation.get("status") or {}
    ev_gen = (observed.evaluation.get("metadata") or {}).get("generation")
    if ev_gen is not None and ev_status.get("observedGeneration") not in (None, ev_gen):
        return None, ("WaitingEvaluation", f"Evaluation {eval_name!r} passed an earlier spec; waiting for its verdict on the current one", False)
    model = ev_status.get("model")
    if not model or not model.get("digest"):
        return None, ("NoModel", f"Evaluation {eval_name!r} names no model yet", False)
    model = {"uri": model["uri"], "digest": model["digest"]}
    pin = dumped.get("modelDigest")
    if pin and pin != model["digest"]:
        return None, ("EvaluationModelMismatch",
                      f"refused: Evaluation {eval_name!r} passed model {_short(model['digest'])} but spec.modelDigest pins {_short(pin)}", True)
    tr = observed.trainingrun
    tr_model = ((tr or {}).get("status") or {}).get("model") or {}
    if tr is not None and tr_model.get("digest") and tr_model["digest"] != model["digest"]:
        tr_name = tr["metadata"]["name"]
        return None, ("EvaluationModelMismatch",
                      f"refused: Evaluation {eval_name!r} passed model {_short(model['digest'])} but TrainingRun "
                      f"{tr_name!r} now holds model {_short(tr_model['digest'])}: that model has not been evaluated", True)
    return model, None


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    st = sb.status
    dumped, refused = read_spec(body, sb, "evaluationRef")
    if refused:
        return refused
    sa, runtime = dumped["serviceAccountName"], dumped["runtime"]
    mode = mode_of(dumped, observed.isvc)
    deadline = dumped["canary"]["progressDeadlineSeconds"]
    champion = st.get("model")
    st["inferenceService"] = body["metadata"]["name"]
    state = isvcs.isvc_state(observed.isvc) if observed.isvc else None
    if state and state["url"]:
        st["url"] = state["url"]
    annotations = body["metadata"].get("annotations") or {}
    events: list[Event] = []

    def annotation(key: str, handled: str) -> bool:
        value = annotations.get(key)
        return bool(value) and value.lower() != "false" and value != st.get(handled)

    rollout = st.get("rollout") if st.get("canaryModel") else None

    # 1. Which model does the spec ask for? Only one whose Evaluation passed, for that model.
    desired, problem = desired_model(dumped, observed)
    if problem and not rollout:
        reason, message, fatal = problem
        if champion:
            sb.condition("Progressing", False, reason, message)
            ready = bool(state and state["ready"])
            sb.phase("Available" if ready else "Degraded", reason, message, ready=ready)
            return Plan(status=sb.build(), events=[Event("Warning", reason, message)] if fatal and _new_reason(body, reason) else [])
        sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
        return Plan(status=sb.build(), events=[Event("Warning", reason, message)] if fatal else [])

    # 2. No InferenceService yet: the first rollout (or a re-creation of the champion).
    if observed.isvc is None:
        target = champion or desired
        st["canaryModel"] = None
        st["canaryStartTime"] = now_iso(now)
        if not champion:
            st.pop("rollout", None)
        sb.condition("Progressing", True, "Creating", f"creating InferenceService for model {_short(target['digest'])}")
        sb.phase("Progressing", "Creating", f"creating InferenceService {body['metadata']['name']}")
        manifest = isvcs.inference_service(
            name=body["metadata"]["name"], namespace=body["metadata"]["namespace"], model_uri=target["uri"],
            model_digest=target["digest"], service_account=sa, owner=owner_reference(body), labels=labels_for(body),
            runtime=runtime, mode=dumped.get("mode"))
        return Plan(status=sb.build(), create=[manifest],
                    events=[Event("Normal", "Creating", f"InferenceService for model {_short(target['digest'])}")])

    # 3. First rollout: nothing to roll back to, so failure is Failed.
    if not champion:
        served = isvcs.isvc_models(observed.isvc, mode)["stable"]
        fresh = state["observed_generation"] in (None, observed.isvc["metadata"].get("generation"))
        started = parse_time(st.get("canaryStartTime")) or now
        if state["failure"] or (now - started).total_seconds() > deadline:
            message = f"model {_short(served)} did not become ready: {state['failure'] or f'not Ready within progressDeadlineSeconds {deadline}'}"
            sb.condition("Progressing", False, "RolloutFailed", message)
            sb.phase("Failed", "RolloutFailed", message, failed=True)
            return Plan(status=sb.build(), events=[Event("Warning", "RolloutFailed", message)])
        if fresh and state["ready"] and state["latest_ready"] and served:
            model = desired if desired and desired["digest"] == served else {"uri": isvcs.served_model(observed.isvc)[0], "digest": served}
            st.update({"model": model, "canaryModel": None, "trafficPercent": 0})
            message = f"serving model {_short(model['digest'])} at {state['url']}"
            sb.condition("Progressing", False, "RolloutComplete", message)
            sb.phase("Available", "RolloutComplete", message, ready=True)
            return Plan(status=sb.build(), events=[Event("Normal", "Available", message)],
                        lineage=[_lineage(body, model, observed.evaluation, now)])
        sb.phase("Progressing", "WaitingForReady", "waiting for the InferenceService to become Ready")
        return Plan(status=sb.build())

    # 4. A rollout in flight: one step of the state machine.
    if rollout:
        return _advance(body, sb, dumped, observed, state, mode, rollout, desired, now,
                        promote=annotation(PROMOTE, "promoteHandled"), abort=annotation(ABORT, "abortHandled"))

    # 5. Steady state: start a rollout for a new model, or keep the champion as declared.
    rejected = st.get("rejectedModels") or []
    if desired["digest"] != champion["digest"]:
        if desired["digest"] in {r.get("digest") for r in rejected}:
            message = f"model {_short(desired['digest'])} was rolled back before; serving {_short(champion['digest'])}"
            sb.condition("Progressing", False, "ModelRejected", message)
            sb.phase("RolledBack" if st.get("phase") == "RolledBack" else "Available", "ModelRejected", message, ready=state["ready"])
            return Plan(status=sb.build())
        steps = steps_of(dumped)
        st.update({"canaryModel": desired, "canaryStartTime": now_iso(now), "canaryReadySince": None, "trafficPercent": 0,
                   "rollout": ro.start(desired, steps, now)})
        message = (f"rolling out model {_short(desired['digest'])} beside {_short(champion['digest'])} "
                   f"in steps {steps} ({mode})")
        sb.condition("Progressing", True, "RolloutStarted", message)
        sb.phase("Canary", "RolloutStarted", message, ready=True)
        return Plan(status=sb.build(), patch=[(observed.isvc, isvcs.canary_patch(desired, sa, 0, runtime, mode))],
                    events=[Event("Normal", "RolloutStarted", message)])

    # Nothing to roll out. Annotations with nothing to act on are recorded, so they never fire on a later rollout.
    for key, handled in ((PROMOTE, "promoteHandled"), (ABORT, "abortHandled")):
        if annotation(key, handled):
            st[handled] = annotations[key]
            events.append(Event("Normal", "AnnotationIgnored", f"{key}={annotations[key]!r}: no rollout in progress"))
    patches = []
    routed = isvcs.isvc_models(observed.isvc, mode)
    settled = routed["stable"] == champion["digest"] and routed["canary"] is None
    rolled_back = (not isvcs.is_raw(mode) and routed["canary"] in {r.get("digest") for r in rejected}
                   and routed["weight"] == 0)
    if not (settled or rolled_back):  # someone edited our child: restore it
        patches.append((observed.isvc, isvcs.model_patch(champion["uri"], champion["digest"], sa, None, runtime, mode)))
    message = f"serving model {_short(champion['digest'])}" + (f" at {state['url']}" if state["url"] else "")
    if st.get("phase") == "RolledBack":
        rb = get_condition(st.get("conditions"), "RolledBack") or {}
        sb.phase("RolledBack", rb.get("reason") or "RolledBack", rb.get("message") or message, ready=state["ready"])
    else:
        sb.phase("Available" if state["ready"] else "Degraded", "Serving" if state["ready"] else "NotReady", message, ready=state["ready"])
    return Plan(status=sb.build(), patch=patches, events=events)


def _new_reason(body: dict[str, Any], reason: str) -> bool:
    cond = get_condition((body.get("status") or {}).get("conditions"), "Progressing") or {}
    return cond.get("reason") != reason


def _advance(body, sb, dumped, observed, state, mode, rollout, desired, now, *, promote, abort) -> Plan:
    st = sb.status
    sa, runtime = dumped["serviceAccountName"], dumped["runtime"]
    champion, canary_model = st["model"], st["canaryModel"]
    annotations = body["metadata"].get("annotations") or {}
    events: list[Event] = []
    canary = canary_state(observed.isvc, mode, canary_model["digest"])
    if canary.ready and not st.get("canaryReadySince"):
        st["canaryReadySince"] = now_iso(now)
    promote = promote and canary.ready  # a promote waits for a Ready canary; it is handled when acted on
    if promote:
        st["promoteHandled"] = annotations[PROMOTE]
    if abort:
        st["abortHandled"] = annotations[ABORT]

    # The spec moved on (or its model is refused now) mid-rollout: stop this canary first.
    if not abort and (desired is None or desired["digest"] != canary_model["digest"]):
        new, decision = dict(rollout, result="Aborted", weight=0), ro.Decision(
            "rollback", "Superseded",
            "the spec no longer asks for this model" + (f" (now {_short(desired['digest'])})" if desired else ""))
    else:
        new, decision = ro.step(dumped, rollout, canary, observed.round, now, promote=promote, abort=abort)
    st["rollout"] = new
    patches = []
    lineage = []
    if decision.action == "hold":
        routed = isvcs.isvc_models(observed.isvc, mode)
        if routed["canary"] != canary_model["digest"] or (routed["weight"] or 0) != new["weight"]:
            # Not what this step wants (a patch lost to a restart, or an edit): apply it again.
            patches.append((observed.isvc, isvcs.canary_patch(canary_model, sa, new["weight"], runtime, mode)))
        st["trafficPercent"] = new["weight"]
        sb.condition("Progressing", True, decision.reason, decision.message)
        sb.phase("Canary", decision.reason, decision.message, ready=True)
    elif decision.action == "weight":
        st["trafficPercent"] = decision.weight
        patches.append((observed.isvc, isvcs.canary_patch(canary_model, sa, decision.weight, runtime, mode)))
        sb.condition("Progressing", True, decision.reason, decision.message)
        sb.phase("Canary", decision.reason, decision.message, ready=True)
        events.append(Event("Normal", decision.reason, decision.message))
    elif decision.action == "promote":
        message = f"promoted model {_short(canary_model['digest'])} (was {_short(champion['digest'])}): {decision.message}"
        new["message"] = message
        st.update({"previousModel": champion, "model": canary_model, "canaryModel": None, "canaryReadySince": None,
                   "trafficPercent": 0})
        patches.append((observed.isvc, isvcs.promote_patch(canary_model, sa, runtime, mode)))
        sb.condition("RolledBack", False, "Promoted", message)
        sb.condition("Progressing", False, "Promoted", message)
        sb.phase("Available", "Promoted", message, ready=True)
        events.append(Event("Normal", "Promoted", message))
        lineage.append(_lineage(body, canary_model, observed.evaluation, now))
    else:  # rollback: all traffic back to the champion
        message = f"rolled back model {_short(canary_model['digest'])} to {_short(champion['digest'])}: {decision.message}"
        new["message"] = message
        rejected = st.get("rejectedModels") or []
        if decision.reason != "Superseded" and canary_model["digest"] not in {r.get("digest") for r in rejected}:
            rejected = rejected + [canary_model]
        st.update({"canaryModel": None, "canaryReadySince": None, "trafficPercent": 0, "rejectedModels": rejected})
        patches.append((observed.isvc, isvcs.rollback_patch(mode)))
        reason = {"AnalysisFailed": "AnalysisFailed", "Aborted": "Aborted"}.get(decision.reason, decision.reason)
        if decision.reason == "Superseded":
            sb.condition("Progressing", True, "Superseded", message)
            sb.phase("Available", "Superseded", message, ready=True)
        else:
            sb.condition("RolledBack", True, reason, message)
            sb.condition("Progressing", False, "RolledBack", message)
            sb.phase("RolledBack", reason, message, ready=True)
            events.append(Event("Warning", "RolledBack", message))
            facets = {"rejectedModel": canary_model, "reason": reason, "message": decision.message}
            if decision.check:
                facets.update({"metric": decision.check["metric"], "value": decision.check.get("value"),
                               "bound": decision.check["bound"]})
            lineage.append(_lineage(body, champion, observed.evaluation, now, action="rollback", facets=facets))
    return Plan(status=sb.build(), patch=patches, events=events, lineage=lineage)
