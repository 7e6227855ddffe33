"""What every planner shares: the Plan it returns, conditions, child names.

Planners are pure: they get the resource and what the kopf layer observed, and
return a Plan. They never call the API or object storage themselves.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from loom import API_VERSION

MAX_NAME = 63  # Job names become pod label values, which are capped at 63


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class LineageRecord:
    """One OpenLineage run: what a finished step read and wrote, by digest."""

    kind: str
    name: str
    run_key: str  # deterministic, so re-writing after a restart is idempotent
    inputs: list[dict[str, str]]  # [{"uri": ..., "digest": ...}]
    outputs: list[dict[str, str]]
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)  # children, if absent
    patch: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (child, merge patch)
    events: list[Event] = field(default_factory=list)
    lineage: list[LineageRecord] = field(default_factory=list)


def now_iso(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def child_name(name: str, suffix: str) -> str:
    """A deterministic DNS-1123 name for a child; long names keep a hash to stay unique."""
    full = f"{name}-{suffix}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: MAX_NAME - 9].rstrip('-')}-{digest}"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Return conditions with one set; lastTransitionTime moves only when status changes."""
    status_s = status if isinstance(status, str) else ("True" if status else "False")
    result = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            result.append(cond)
            continue
        found = True
        changed = cond.get("status") != status_s
        result.append(
            {
                "type": type_,
                "status": status_s,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now_iso(now) if changed else cond.get("lastTransitionTime", now_iso(now)),
                "observedGeneration": generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": status_s,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now_iso(now),
                "observedGeneration": generation,
            }
        )
    return result


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


class StatusBuilder:
    """Starts from the current status and sets phase and the Ready/Failed pair."""

    def __init__(self, body: dict[str, Any], now: dt.datetime):
        self.generation = int(body["metadata"].get("generation") or 1)
        self.now = now
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.status.setdefault("conditions", [])

    def condition(self, type_: str, status: bool | str, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(
            self.status["conditions"], type_, status, reason, message, self.generation, self.now
        )

    def phase(self, phase: str, reason: str, message: str, *, ready: bool = False, failed: bool = False) -> None:
        self.status["phase"] = phase
        self.status["observedGeneration"] = self.generation
        self.condition("Ready", ready, reason, message)
        if failed or get_condition(self.status["conditions"], "Failed"):
            self.condition("Failed", failed, reason, message if failed else "")

    def build(self) -> dict[str, Any]:
        return self.status


def ref_namespace_error(ref: dict[str, Any] | None, own_namespace: str, field_name: str) -> str | None:
    """Tenancy is the namespace: a reference into another namespace is refused."""
    if ref and ref.get("namespace") and ref["namespace"] != own_namespace:
        return (
            f"{field_name}.namespace {ref['namespace']!r} differs from the resource's namespace "
            f"{own_namespace!r}: cross-namespace references are refused"
        )
    return None
