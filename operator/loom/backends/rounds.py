"""The I/O of one analysis round: query each metric, call the due webhooks.

Called by the kopf layer (observe_deployment) only when reconcile.rollout.due
says a round is due; the planner consumes the resulting Round. Nothing here
decides anything beyond "which source answers this metric".
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Any

from loom.api import parse_spec
from loom.backends import inferenceservice as isvcs
from loom.backends import prometheus, webhooks
from loom.reconcile import analysis, rollout as ro


def canary_revision(isvc: dict[str, Any], mode: str, digest: str) -> str | None:
    if isvcs.is_raw(mode):  # KServe 0.20 names a canary's Deployment {isvc}-{name}-predictor
        return f"{isvc['metadata']['name']}-{isvcs.predictor_name(digest)}-predictor"
    return isvcs.isvc_state(isvc)["latest_ready_revision"]


def run_round(body: dict[str, Any], isvc: dict[str, Any] | None, now: dt.datetime,
              prometheus_address: str | None = None) -> ro.Round | None:
    from loom.reconcile.deployment import canary_state  # the planner's own reading of readiness

    status = body.get("status") or {}
    rollout, canary_model = status.get("rollout"), status.get("canaryModel")
    if not rollout or not canary_model or isvc is None:
        return None
    try:
        dumped = parse_spec("Deployment", body.get("spec") or {}).model_dump(by_alias=True, mode="json", exclude_none=True)
    except ValueError:
        return None  # the planner reports the invalid spec
    mode = isvcs.deployment_mode(dumped.get("mode"), isvc)
    due = ro.due(dumped, rollout, canary_state(isvc, mode, canary_model["digest"]).ready, now)
    if due is None:
        return None
    rnd = ro.Round()
    phase = "Waiting" if rollout.get("awaitingPromotion") else (
        "Progressing" if rollout.get("preRolloutPassed") else "Initializing")
    for hook in due["webhooks"]:
        rnd.webhooks[hook["name"]] = webhooks.call(hook, webhooks.payload(body, hook, phase, canary_model["digest"]))
    if due["metrics"]:
        rnd.checks = measure(dumped, rollout, isvc, mode, canary_model["digest"], now,
                             prometheus_address or os.environ.get("LOOM_PROMETHEUS_ADDRESS"))
    return rnd


def measure(dumped: dict[str, Any], rollout: dict[str, Any], isvc: dict[str, Any], mode: str, digest: str,
            now: dt.datetime, prometheus_address: str | None) -> list[dict[str, Any]]:
    since = ro.window_start(rollout) or now
    interval = dumped["analysis"]["interval"]
    revision = canary_revision(isvc, mode, digest) or ""
    variables = {"namespace": isvc["metadata"]["namespace"], "name": isvc["metadata"]["name"],
                 "revision": revision, "interval": f"{max(interval, 1)}s"}
    url = isvcs.isvc_state(isvc)["url"]
    local: tuple[dict[str, Any] | None, str | None] | None = None
    checks = []
    for metric in dumped["analysis"]["metrics"]:
        if metric.get("prometheus"):
            value, why = prometheus.query(metric["prometheus"]["address"],
                                          prometheus.render(metric["prometheus"]["query"], variables))
        else:
            if local is None:
                local = prometheus.proxy_metrics(url, since.timestamp()) if url else (None, "no URL yet")
            report, why = local
            if report is not None:
                stats = (report.get("revisions") or {}).get(revision)
                value, why = analysis.builtin_value(metric["name"], stats, dumped["analysis"]["minRequests"])
            elif prometheus_address:
                value, why = prometheus.query(prometheus_address,
                                              prometheus.render(prometheus.KNATIVE_QUERIES[metric["name"]], variables))
            else:
                value = None
                why = f"{why}; no Prometheus for builtin metrics (set LOOM_PROMETHEUS_ADDRESS)"
        checks.append(analysis.judge(metric, value, why))
    return checks
