"""Analysis: judge one round's metric values against their thresholdRange. Pure.

A value outside its range fails the check; a missing value (no data, too few
requests, a query error) is inconclusive: the step pauses rather than fails.
"""
from __future__ import annotations

import math
from typing import Any

_QUANTILE = {"latency-p50": "p50", "latency-p95": "p95", "latency-p99": "p99"}


def bound_text(tr: dict[str, Any]) -> str:
    lo, hi = tr.get("min"), tr.get("max")
    if lo is not None and hi is not None:
        return f"{lo:g} <= x <= {hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def judge(metric: dict[str, Any], value: float | None, why: str | None = None) -> dict[str, Any]:
    """One check: {metric, value, bound, result pass|fail|inconclusive, message}."""
    name, tr = metric["name"], metric["thresholdRange"]
    bound = bound_text(tr)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"metric": name, "bound": bound, "result": "inconclusive",
                "message": f"{name}: inconclusive ({why or 'no data'})"}
    lo, hi = tr.get("min"), tr.get("max")
    if lo is not None and value < lo:
        result, text = "fail", f"{name} {value:.4g} < min {lo:g}"
    elif hi is not None and value > hi:
        result, text = "fail", f"{name} {value:.4g} > max {hi:g}"
    else:
        result, text = "pass", f"{name} {value:.4g} within {bound}"
    return {"metric": name, "value": float(value), "bound": bound, "result": result, "message": text}


def builtin_value(name: str, stats: dict[str, Any] | None, min_requests: int) -> tuple[float | None, str | None]:
    """A builtin metric from one revision's request summary ({requests, errors, latencyMs{p50,p95,p99}}),
    as the local executor's proxy (/loom/metrics) reports it. error-rate is in %, latency in ms."""
    requests = int((stats or {}).get("requests") or 0)
    if requests < min_requests:
        return None, f"{requests} canary request(s) in the window, fewer than minRequests {min_requests}"
    if name == "error-rate":
        return 100.0 * float(stats.get("errors") or 0) / requests, None
    if name in _QUANTILE:
        value = ((stats.get("latencyMs") or {}).get(_QUANTILE[name]))
        return (float(value), None) if value is not None else (None, "no latency samples")
    return None, f"unknown builtin metric {name}"


def round_result(checks: list[dict[str, Any]]) -> str:
    """fail if any check failed; else inconclusive if any was; else pass (no checks: pass)."""
    results = {c["result"] for c in checks}
    if "fail" in results:
        return "fail"
    return "inconclusive" if "inconclusive" in results else "pass"
