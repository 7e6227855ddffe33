"""What the operator may do in the cluster: the least privilege its ClusterRole grants.

The Helm chart's ClusterRole (charts/loom/templates/rbac.yaml) must cover every
entry (a test checks it); the operator's API calls must stay within it.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import GROUP


class RbacNeed(NamedTuple):
    """The operator needs ``verbs`` on ``resource`` (a plural, or plural/subresource)
    of API ``group`` ("" is the core group)."""

    group: str
    resource: str
    verbs: frozenset[str]
    why: str


def _v(*verbs: str) -> frozenset[str]:
    return frozenset(verbs)


_LOOM_PLURALS = ("datasets", "labeljobs", "trainingruns", "evaluations", "deployments")
_CHILD = _v("get", "list", "watch", "create", "patch", "delete")

RBAC_NEEDS: tuple[RbacNeed, ...] = (
    *(
        RbacNeed(GROUP, plural, _v("get", "list", "watch", "patch", "update"), "reconcile")
        for plural in _LOOM_PLURALS
    ),
    *(
        RbacNeed(GROUP, f"{plural}/status", _v("get", "patch", "update"), "write status")
        for plural in _LOOM_PLURALS
    ),
    *(
        RbacNeed(GROUP, f"{plural}/finalizers", _v("update", "patch"), "ownerReferences with blockOwnerDeletion")
        for plural in _LOOM_PLURALS
    ),
    RbacNeed("batch", "jobs", _CHILD, "ingest, label and evaluate workloads"),
    RbacNeed("kubeflow.org", "pytorchjobs", _CHILD, "training"),
    RbacNeed("serving.kserve.io", "inferenceservices", _CHILD, "serving"),
    RbacNeed("", "events", _v("create", "patch"), "kopf and planner events"),
    RbacNeed("", "secrets", _v("get",), "check that referenced Secrets exist (never read into status)"),
    RbacNeed("", "serviceaccounts", _v("get",), "check the Deployment's serviceAccountName"),
    RbacNeed("", "namespaces", _v("list", "watch"), "kopf cluster-wide watching"),
    RbacNeed(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        _v("list", "watch"),
        "kopf resource discovery",
    ),
    RbacNeed("events.k8s.io", "events", _v("create", "patch"), "events via events.k8s.io/v1"),
)


def missing_verbs(rules: list[dict], need: RbacNeed) -> set[str]:
    """The verbs of ``need`` that a list of RBAC PolicyRules does NOT grant."""
    missing = set(need.verbs)
    for rule in rules:
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        verbs = rule.get("verbs") or []
        if rule.get("resourceNames"):
            continue
        if need.group not in groups and "*" not in groups:
            continue
        if need.resource not in resources and "*" not in resources:
            continue
        if "*" in verbs:
            return set()
        missing -= set(verbs)
    return missing
