"""The progressive-delivery state machine: a pure function of (spec, rollout status,
what was observed this tick, now) -> (new rollout status, decision).

One rollout moves a canary model through the traffic steps of spec.canary:

    start (weight 0, waiting for the canary to be Ready)
      -> pre-rollout webhooks (a failure counts toward failureLimit)
      -> steps[0] -> analysis round -> steps[1] -> ... -> last step passed
      -> confirm-promotion webhooks (waits while they refuse) -> promote

Each analysis round (every analysis.interval seconds) judges the metrics: a
failed check counts toward failureLimit, which rolls back; an inconclusive one
(no data, query error) pauses the step; progressDeadlineSeconds without
progress rolls back. A rollback webhook answering 2xx, an abort, or a canary
that fails to load also roll back. The kopf layer runs metric queries and
webhooks only when :func:`due` says a round is due, and passes their results
in as a :class:`Round`; everything else here is bookkeeping in status.
"""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from loom.reconcile.analysis import round_result
from loom.reconcile.common import now_iso, parse_time


@dataclass
class Round:
    """What the kopf layer measured and called for one due round."""

    checks: list[dict[str, Any]] = field(default_factory=list)  # analysis.judge outputs
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {type, ok, message}


@dataclass
class Canary:
    ready: bool = False  # the canary revision is Ready (and the InferenceService names it)
    failure: str | None = None  # it failed to load or crashed


@dataclass
class Decision:
    action: str  # hold | weight | promote | rollback
    reason: str
    message: str
    weight: int | None = None
    check: dict[str, Any] | None = None  # the failing check of a rollback, if any


def start(model: dict[str, str], steps: list[int], now: dt.datetime) -> dict[str, Any]:
    """A new rollout. Every key is set (None clears it): status is written as a JSON merge
    patch, which would otherwise keep the last rollout's leftovers (its result, last round)."""
    t = now_iso(now)
    return {"model": model, "steps": list(steps), "stepIndex": 0, "weight": 0, "preRolloutPassed": False,
            "awaitingPromotion": False, "startedAt": t, "stepStartedAt": t, "lastProgressAt": t,
            "lastAnalysisAt": None, "analysisRounds": 0, "failedChecks": 0, "inconclusiveRounds": 0,
            "stepsPassed": [], "checks": [], "result": None, "reason": "Started",
            "message": "waiting for the canary to become Ready"}


def hooks(spec: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [w for w in spec["analysis"].get("webhooks") or [] if w["type"] == type_]


def due(spec: dict[str, Any], rollout: dict[str, Any] | None, canary_ready: bool, now: dt.datetime) -> dict[str, Any] | None:
    """What the kopf layer must measure and call this tick: None, or
    {"metrics": bool, "webhooks": [webhook specs]} for one round."""
    if not rollout or rollout.get("result") or not canary_ready:
        return None
    rollback = hooks(spec, "rollback")
    if not rollout.get("preRolloutPassed"):
        pre = hooks(spec, "pre-rollout")
        if not pre:
            return None  # nothing to call: the machine moves to the first step at once
        last = parse_time(rollout.get("lastAnalysisAt"))
        if last is None or (now - last).total_seconds() >= spec["analysis"]["interval"]:
            return {"metrics": False, "webhooks": pre + rollback}
        return None
    last = parse_time(rollout.get("lastAnalysisAt")) or parse_time(rollout.get("stepStartedAt")) or now
    if (now - last).total_seconds() < spec["analysis"]["interval"]:
        return None
    if rollout.get("awaitingPromotion"):
        return {"metrics": False, "webhooks": hooks(spec, "confirm-promotion") + rollback}
    return {"metrics": True, "webhooks": rollback}


def window_start(rollout: dict[str, Any]) -> dt.datetime | None:
    """Metrics of a round cover the requests since the previous round (or the step's start)."""
    return parse_time(rollout.get("lastAnalysisAt")) or parse_time(rollout.get("stepStartedAt"))


def _since(rollout: dict[str, Any], key: str, now: dt.datetime) -> float:
    t = parse_time(rollout.get(key)) or now
    return (now - t).total_seconds()


def step(spec: dict[str, Any], rollout: dict[str, Any], canary: Canary, rnd: Round | None, now: dt.datetime, *,
         promote: bool = False, abort: bool = False) -> tuple[dict[str, Any], Decision]:
    """Advance the rollout by one tick."""
    r = copy.deepcopy(rollout)
    analysis = spec["analysis"]
    limit, deadline = analysis["failureLimit"], spec["canary"]["progressDeadlineSeconds"]
    t = now_iso(now)

    def out(action: str, reason: str, message: str, **kw: Any) -> tuple[dict[str, Any], Decision]:
        r["message"], r["reason"] = message, reason
        if action == "promote":
            r.update({"result": "Promoted", "weight": 100})
        elif action == "rollback":
            r.update({"result": "Aborted" if reason == "Aborted" else "RolledBack", "weight": 0})
        return r, Decision(action, reason, message, **kw)

    if abort:
        return out("rollback", "Aborted", "aborted by the loom.dev/abort annotation")
    if canary.failure:
        return out("rollback", "CanaryUnhealthy", f"canary health check failed: {canary.failure}")
    if rnd is not None:
        for name, res in rnd.webhooks.items():
            if res.get("type") == "rollback" and res.get("ok"):
                return out("rollback", "RollbackWebhook", f"rollback webhook {name!r} asked for a rollback: {res.get('message', '')}")
    if not canary.ready:
        if _since(r, "lastProgressAt", now) > deadline:
            return out("rollback", "ProgressDeadlineExceeded",
                       f"canary not Ready within progressDeadlineSeconds {deadline}")
        return out("hold", "WaitingForCanary", "waiting for the canary to become Ready")
    if promote:
        return out("promote", "ManualPromotion", f"promoted by the loom.dev/promote annotation at {r['weight']}%")

    if not r.get("preRolloutPassed"):
        pre = hooks(spec, "pre-rollout")
        if pre:
            if rnd is None:
                return _hold_or_deadline(r, now, deadline, out, "waiting for the pre-rollout webhooks")
            r["lastAnalysisAt"] = t
            failed = [f"{n}: {res.get('message', '')}" for n, res in rnd.webhooks.items()
                      if res.get("type") == "pre-rollout" and not res.get("ok")]
            if failed:
                r["failedChecks"] += 1
                message = f"pre-rollout webhook failed ({r['failedChecks']}/{limit}): " + "; ".join(failed)
                if r["failedChecks"] >= limit:
                    return out("rollback", "PreRolloutWebhookFailed", message)
                return out("hold", "PreRolloutWebhookFailed", message)
        first = r["steps"][0]
        r.update({"preRolloutPassed": True, "stepIndex": 0, "weight": first, "stepStartedAt": t, "lastProgressAt": t})
        r["lastAnalysisAt"] = None  # the first step's rounds start from its own start
        return out("weight", "StepStarted", f"step 1/{len(r['steps'])}: canary at {first}%", weight=first)

    if rnd is None:
        return _hold_or_deadline(r, now, deadline, out, r.get("message") or "analysing")
    r["lastAnalysisAt"] = t
    if r.get("awaitingPromotion"):
        refused = [f"{n}: {res.get('message', '')}" for n, res in rnd.webhooks.items()
                   if res.get("type") == "confirm-promotion" and not res.get("ok")]
        r["lastProgressAt"] = t  # a human gate: waiting for it is not a stalled rollout
        if refused:
            return out("hold", "WaitingForConfirmation", "confirm-promotion webhook refused: " + "; ".join(refused))
        return out("promote", "Promoted", f"all {len(r['steps'])} steps passed; promotion confirmed")

    r["analysisRounds"] += 1
    r["checks"] = rnd.checks
    result = round_result(rnd.checks)
    weight = r["weight"]
    if result == "fail":
        r["failedChecks"] += 1
        bad = next(c for c in rnd.checks if c["result"] == "fail")
        message = (f"analysis round {r['analysisRounds']} at {weight}% failed ({r['failedChecks']}/{limit}): "
                   f"{bad['metric']} {bad['value']:.4g} outside {bad['bound']}")
        if r["failedChecks"] >= limit:
            return out("rollback", "AnalysisFailed", message, check=bad)
        return out("hold", "AnalysisFailed", message)
    if result == "inconclusive":
        r["inconclusiveRounds"] += 1
        why = "; ".join(c["message"] for c in rnd.checks if c["result"] == "inconclusive")
        if _since(r, "lastProgressAt", now) > deadline:
            return out("rollback", "ProgressDeadlineExceeded",
                       f"no conclusive analysis at {weight}% within progressDeadlineSeconds {deadline}: {why}")
        return out("hold", "Inconclusive", f"step paused at {weight}%: {why}")
    r["stepsPassed"] = r.get("stepsPassed", []) + [weight]
    r["lastProgressAt"] = t
    passed = "; ".join(c["message"] for c in rnd.checks) or "no metrics declared"
    if r["stepIndex"] + 1 < len(r["steps"]):
        r["stepIndex"] += 1
        nxt = r["steps"][r["stepIndex"]]
        r.update({"weight": nxt, "stepStartedAt": t})
        return out("weight", "StepPassed",
                   f"step {r['stepIndex']}/{len(r['steps'])} at {weight}% passed ({passed}); canary now at {nxt}%",
                   weight=nxt)
    if hooks(spec, "confirm-promotion"):
        r["awaitingPromotion"] = True
        return out("hold", "WaitingForConfirmation",
                   f"all steps passed ({passed}); waiting for the confirm-promotion webhooks")
    return out("promote", "Promoted", f"all {len(r['steps'])} steps passed; last round: {passed}")


def _hold_or_deadline(r: dict[str, Any], now: dt.datetime, deadline: int, out: Any, message: str):
    """Between rounds: nothing new, unless the rollout has stalled past its deadline."""
    if not r.get("awaitingPromotion") and _since(r, "lastProgressAt", now) > deadline:
        return out("rollback", "ProgressDeadlineExceeded", f"no progress within progressDeadlineSeconds {deadline}: {message}")
    return out("hold", r.get("reason") or "Waiting", message)
