"""Metric sources of an analysis round: a Prometheus instant query, and the model
server's own request metrics (the builtin metrics).

Every failure is an answer, not an exception: (None, why) makes the check
inconclusive, which pauses the step rather than failing it.
"""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT = 5.0

#: Builtin metrics in a cluster: Knative's queue-proxy metrics of the canary revision (Serverless mode).
#: error-rate in %, latency in ms.
KNATIVE_QUERIES = {
    "error-rate": ('100 * sum(rate(revision_app_request_count{namespace_name="{{namespace}}",'
                   'revision_name="{{revision}}",response_code_class="5xx"}[{{interval}}])) / '
                   'sum(rate(revision_app_request_count{namespace_name="{{namespace}}",revision_name="{{revision}}"}[{{interval}}]))'),
    **{f"latency-p{q}": (f'histogram_quantile(0.{q}, sum by (le) (rate(revision_app_request_latencies_bucket'
                         '{namespace_name="{{namespace}}",revision_name="{{revision}}"}[{{interval}}])))')
       for q in ("50", "95", "99")},
}


def render(query: str, variables: dict[str, str]) -> str:
    """Fill Flagger-style {{var}} (or {{ var }}) placeholders."""
    for key, value in variables.items():
        query = query.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
    return query


def query(address: str, promql: str, timeout: float = TIMEOUT) -> tuple[float | None, str | None]:
    """One number from a PromQL instant query: the first sample of a vector, or a scalar."""
    url = address.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return None, f"prometheus answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"prometheus query failed: {type(exc).__name__}"
    if body.get("status") != "success":
        return None, f"prometheus error: {body.get('error') or body.get('status')}"
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and result:
        raw = result[1]
    elif data.get("resultType") == "vector" and result:
        raw = result[0]["value"][1]
    else:
        return None, "no data"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, f"not a number: {raw!r}"
    return (None, "no data (NaN)") if math.isnan(value) else (value, None)


def proxy_metrics(url: str, since_unix: float, timeout: float = TIMEOUT) -> tuple[dict[str, Any] | None, str | None]:
    """Per-revision request metrics from the local executor's traffic proxy (GET /loom/metrics)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/loom/metrics?since={since_unix:.3f}", timeout=timeout) as resp:
            return json.loads(resp.read()), None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"model server metrics unavailable: {type(exc).__name__}"
