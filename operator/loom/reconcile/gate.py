"""The Evaluation verdict, as pure functions of the spec and the scored result.

The evaluation workload calls these to put the checks into the model card; the
operator's planner calls them again on the workload's result to write status.
Both see the same inputs, so card and status agree by construction.
"""
from __future__ import annotations

from typing import Any

LEAKAGE = "leakage"
CHAMPION_PREFIX = "champion."


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def judge(metrics: dict[str, float], thresholds: list[dict[str, Any]], suffix: str = "") -> list[dict[str, Any]]:
    """One check per bound: metric, value, bound, passed, and a line a human reads."""
    checks = []
    for t in thresholds:
        metric = t["metric"] + suffix
        value = metrics.get(t["metric"])
        for side, op in (("min", ">="), ("max", "<=")):
            if t.get(side) is None:
                continue
            bound = float(t[side])
            if value is None:
                passed, line = False, f"{metric} was not computed"
            else:
                passed = value >= bound if side == "min" else value <= bound
                line = f"{metric} {_fmt(value)} {op if passed else ('<' if side == 'min' else '>')} {side} {_fmt(bound)}"
            check = {"metric": metric, "bound": f"{op} {bound:g}", "passed": passed, "message": line}
            if value is not None:
                check["value"] = float(value)
            checks.append(check)
    return checks


def slice_checks(slices_spec: list[dict[str, Any]], slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-slice thresholds on every scored slice; a skipped slice (too few rows) is not gated."""
    checks = []
    for spec in slices_spec:
        if not spec.get("thresholds"):
            continue
        for s in slices:
            if s["column"] != spec["column"] or s.get("skipped"):
                continue
            checks += judge(s.get("metrics") or {}, spec["thresholds"], suffix=f"[{s['column']}={s['value']}]")
    return checks


def champion_check(champion: dict[str, Any] | None, candidate: dict[str, float]) -> dict[str, Any] | None:
    """candidate >= champion - tolerance on the champion metric; no champion passes."""
    if not champion:
        return None
    metric = champion["metric"]
    name = CHAMPION_PREFIX + metric
    model = champion.get("model")
    if not model:
        why = champion.get("reason") or f"Deployment {champion.get('deployment')!r} serves no model yet"
        return {"metric": name, "bound": "", "passed": True, "message": f"no champion: {why}"}
    value, theirs = candidate.get(metric), champion.get("value")
    tolerance = float(champion.get("tolerance") or 0.0)
    if value is None or theirs is None:
        return {"metric": name, "bound": "", "passed": False,
                "message": f"{metric} could not be computed for the {'candidate' if value is None else 'champion'}"}
    bound = float(theirs) - tolerance
    passed = float(value) >= bound - 1e-12
    line = (f"{name}: candidate {_fmt(value)} {'>=' if passed else '<'} champion {_fmt(theirs)} - tolerance {_fmt(tolerance)}"
            f" (champion {model['digest'][:19]} served by Deployment {champion.get('deployment')})")
    return {"metric": name, "value": float(value), "bound": f">= {bound:.6g}", "passed": passed, "message": line}


def all_checks(spec: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check, in a fixed order: leakage, thresholds, slices, champion."""
    checks: list[dict[str, Any]] = []
    if result.get("leakageCheck"):
        checks.append(result["leakageCheck"])
    metrics = result.get("metrics") or {}
    checks += judge(metrics, spec.get("thresholds") or [])
    checks += slice_checks(spec.get("slices") or [], result.get("slices") or [])
    champ = champion_check(result.get("champion"), metrics)
    if champ:
        checks.append(champ)
    return checks


def verdict_reason(checks: list[dict[str, Any]]) -> str | None:
    """The condition reason for the failing checks (None when all pass); the most specific wins."""
    failing = [c["metric"] for c in checks if not c["passed"]]
    if not failing:
        return None
    if LEAKAGE in failing:
        return "Leakage"
    if any(m.startswith(CHAMPION_PREFIX) for m in failing):
        return "ChampionRegression"
    return "ThresholdNotMet"
