"""Deployment: serve the evaluated model through a KServe InferenceService, canary first.

The state of a rollout lives in the Deployment's status (champion, canary,
rejected models), so an operator restart picks it up where it was.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loom.backends.inferenceservice import inference_service, isvc_state, model_patch, served_model
from loom.config import Settings
from loom.reconcile.common import (
    Event, LineageRecord, Plan, StatusBuilder, get_condition, now_iso, owner_reference, parse_time,
)
from loom.reconcile.steps import dependency_problem, labels_for, read_spec


@dataclass
class Observed:
    evaluation: dict[str, Any] | None = None
    isvc: dict[str, Any] | None = None


def _short(digest: str | None) -> str:
    return (digest or "")[:19]


def _isvc(body: dict[str, Any], model: dict[str, str], sa: str, canary: int | None) -> dict[str, Any]:
    return inference_service(
        name=body["metadata"]["name"], namespace=body["metadata"]["namespace"],
        model_uri=model["uri"], model_digest=model["digest"], service_account=sa,
        owner=owner_reference(body), labels=labels_for(body), canary_percent=canary,
    )


def _model_patch(model: dict[str, str], sa: str, canary: int | None) -> dict[str, Any]:
    return model_patch(model["uri"], model["digest"], sa, canary)


def _lineage(body: dict[str, Any], model: dict[str, str], evaluation: dict[str, Any], now: dt.datetime) -> LineageRecord:
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    report = (evaluation.get("status") or {}).get("report")
    inputs = [{"uri": model["uri"], "digest": model["digest"]}]
    if report:
        inputs.append({"uri": report["uri"], "digest": report["digest"]})
    return LineageRecord(
        kind="deployment", name=name, run_key=f"{body['metadata']['uid'][:8]}-{model['digest'][7:19]}",
        inputs=inputs, outputs=[{"uri": f"kserve://{ns}/{name}", "digest": model["digest"]}],
        facets={"evaluation": evaluation["metadata"]["name"], "promotedAt": now_iso(now)},
    )


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    st = sb.status
    dumped, refused = read_spec(body, sb, "evaluationRef")
    if refused:
        return refused
    canary = dumped["canary"]  # the model fills every default
    percent, analysis, deadline = canary["trafficPercent"], canary["analysisSeconds"], canary["readyDeadlineSeconds"]
    sa = dumped["serviceAccountName"]
    champion = st.get("model")
    st["inferenceService"] = body["metadata"]["name"]
    state = isvc_state(observed.isvc) if observed.isvc else None
    if state and state["url"]:
        st["url"] = state["url"]

    # 1. What model does the spec ask for? Only one whose Evaluation passed.
    eval_name = dumped["evaluationRef"]["name"]
    problem = dependency_problem(observed.evaluation, "Evaluation", eval_name, {"Passed"})
    if problem:
        reason, message, fatal = problem
        if fatal:
            reason, message = "EvaluationNotPassed", f"refused: Evaluation {eval_name!r} has not passed ({_eval_summary(observed.evaluation)})"
        if champion:
            sb.condition("Progressing", False, reason, message)
            sb.phase("Available" if state and state["ready"] else "Degraded", reason, message, ready=bool(state and state["ready"]))
            return Plan(status=sb.build())
        sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
        return Plan(status=sb.build(), events=[Event("Warning", reason, message)] if fatal else [])
    desired = (observed.evaluation.get("status") or {}).get("model")
    if not desired or not desired.get("digest"):
        sb.phase("Pending", "NoModel", f"Evaluation {eval_name!r} names no model yet")
        return Plan(status=sb.build())
    desired = {"uri": desired["uri"], "digest": desired["digest"]}
    rejected = st.get("rejectedModels") or []
    rejected_digests = {r.get("digest") for r in rejected}

    # 2. No InferenceService yet: the first rollout (or a re-creation of the champion).
    if observed.isvc is None:
        target = champion or desired
        st["canaryModel"] = None if champion else desired
        st["canaryStartTime"] = now_iso(now)
        sb.condition("Progressing", True, "Creating", f"creating InferenceService for model {_short(target['digest'])}")
        sb.phase("Progressing", "Creating", f"creating InferenceService {body['metadata']['name']}")
        return Plan(status=sb.build(), create=[_isvc(body, target, sa, None)],
                    events=[Event("Normal", "Creating", f"InferenceService for model {_short(target['digest'])}")])

    canary_model = st.get("canaryModel")
    started = parse_time(st.get("canaryStartTime")) or now
    fresh = state["observed_generation"] in (None, observed.isvc["metadata"].get("generation"))

    # 3. First rollout: nothing to roll back to, so failure is Failed.
    if not champion:
        if state["failure"] or (now - started).total_seconds() > deadline:
            message = f"model {_short(canary_model['digest'] if canary_model else desired['digest'])} did not become ready: {state['failure'] or f'not Ready within {deadline:.0f}s'}"
            sb.condition("Progressing", False, "RolloutFailed", message)
            sb.phase("Failed", "RolloutFailed", message, failed=True)
            return Plan(status=sb.build(), events=[Event("Warning", "RolloutFailed", message)])
        if fresh and state["ready"] and state["latest_ready"]:
            model = canary_model or desired
            st.update({"model": model, "canaryModel": None, "trafficPercent": 100})
            message = f"serving model {_short(model['digest'])} at {state['url']}"
            sb.condition("Progressing", False, "RolloutComplete", message)
            sb.phase("Available", "RolloutComplete", message, ready=True)
            return Plan(status=sb.build(), events=[Event("Normal", "Available", message)],
                        lineage=[_lineage(body, model, observed.evaluation, now)])
        sb.phase("Progressing", "WaitingForReady", "waiting for the InferenceService to become Ready")
        return Plan(status=sb.build())

    # 4. A canary in flight: promote when healthy long enough, roll back on failure or timeout.
    if canary_model:
        if canary_model["digest"] != desired["digest"]:
            # The spec moved on mid-canary: point the canary at the newer model.
            st.update({"canaryModel": desired, "canaryStartTime": now_iso(now), "canaryReadySince": None})
            sb.phase("Canary", "CanaryRestarted", f"canary now model {_short(desired['digest'])}")
            return Plan(status=sb.build(), patch=[(observed.isvc, _model_patch(desired, sa, percent))])
        failure = state["failure"] if fresh else None
        if not failure and (now - started).total_seconds() > deadline and not (fresh and state["latest_ready"]):
            failure = f"not Ready within readyDeadlineSeconds {deadline:.0f}"
        if failure:
            message = (f"rolled back model {_short(canary_model['digest'])} to {_short(champion['digest'])}: "
                       f"canary health check failed: {failure}")
            st.update({"canaryModel": None, "canaryReadySince": None, "trafficPercent": 100,
                       "rejectedModels": rejected + [canary_model]})
            sb.condition("RolledBack", True, "CanaryUnhealthy", message)
            sb.condition("Progressing", False, "RolledBack", message)
            sb.phase("RolledBack", "CanaryUnhealthy", message, ready=True)
            return Plan(status=sb.build(), patch=[(observed.isvc, _model_patch(champion, sa, None))],
                        events=[Event("Warning", "RolledBack", message)])
        if fresh and state["latest_ready"]:
            since = parse_time(st.get("canaryReadySince")) or now
            st["canaryReadySince"] = now_iso(since)
            if (now - since).total_seconds() >= analysis:
                message = f"promoted model {_short(canary_model['digest'])} (was {_short(champion['digest'])})"
                st.update({"previousModel": champion, "model": canary_model, "canaryModel": None,
                           "canaryReadySince": None, "trafficPercent": 100})
                sb.condition("RolledBack", False, "Promoted", message)
                sb.condition("Progressing", False, "Promoted", message)
                sb.phase("Available", "Promoted", message, ready=True)
                return Plan(status=sb.build(), patch=[(observed.isvc, _model_patch(canary_model, sa, None))],
                            events=[Event("Normal", "Promoted", message)],
                            lineage=[_lineage(body, canary_model, observed.evaluation, now)])
            message = f"canary {_short(canary_model['digest'])} healthy at {percent}% for {(now - since).total_seconds():.0f}s of {analysis:.0f}s"
        else:
            message = f"canary {_short(canary_model['digest'])} at {percent}% is starting"
        st["trafficPercent"] = percent
        sb.condition("Progressing", True, "Canary", message)
        sb.phase("Canary", "Canary", message, ready=True)
        return Plan(status=sb.build())

    # 5. Steady state: start a canary for a new model, or keep the champion as declared.
    if desired["digest"] != champion["digest"]:
        if desired["digest"] in rejected_digests:
            message = f"model {_short(desired['digest'])} was rolled back before; serving {_short(champion['digest'])}"
            sb.condition("Progressing", False, "ModelRejected", message)
            sb.phase(st.get("phase") if st.get("phase") in ("RolledBack", "Available") else "Available",
                     "ModelRejected", message, ready=state["ready"])
            return Plan(status=sb.build())
        st.update({"canaryModel": desired, "canaryStartTime": now_iso(now), "canaryReadySince": None, "trafficPercent": percent})
        message = f"canary model {_short(desired['digest'])} at {percent}% beside {_short(champion['digest'])}"
        sb.condition("Progressing", True, "CanaryStarted", message)
        sb.phase("Canary", "CanaryStarted", message, ready=True)
        return Plan(status=sb.build(), patch=[(observed.isvc, _model_patch(desired, sa, percent))],
                    events=[Event("Normal", "CanaryStarted", message)])

    patches = []
    uri, digest = served_model(observed.isvc)
    canary_set = ((observed.isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent") is not None
    if digest != champion["digest"] or uri != champion["uri"] or canary_set:
        patches.append((observed.isvc, _model_patch(champion, sa, None)))  # someone edited our child: restore it
    message = f"serving model {_short(champion['digest'])}" + (f" at {state['url']}" if state["url"] else "")
    if st.get("phase") == "RolledBack":
        rolled_back = get_condition(st.get("conditions"), "RolledBack") or {}
        sb.phase("RolledBack", "CanaryUnhealthy", rolled_back.get("message") or message, ready=state["ready"])
    else:
        sb.phase("Available" if state["ready"] else "Degraded", "Serving" if state["ready"] else "NotReady", message, ready=state["ready"])
    return Plan(status=sb.build(), patch=patches)


def _eval_summary(evaluation: dict[str, Any] | None) -> str:
    ready = get_condition(((evaluation or {}).get("status") or {}).get("conditions"), "Ready") or {}
    return ready.get("message") or ready.get("reason") or "not passed"
