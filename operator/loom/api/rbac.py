"""What the operator may do in the cluster: the least privilege its ClusterRole grants.

Exactly the calls the operator makes, nothing more (loom.operator through the
kubernetes client's CustomObjectsApi, and kopf, run with ``clusterwide=True,
standalone=True`` and only timers and indexes). The Helm chart's ClusterRole
(charts/loom/templates/rbac.yaml) grants exactly these (a test checks it).
"""

from __future__ import annotations

from typing import NamedTuple

from .. import GROUP
from .registry import KINDS


class RbacNeed(NamedTuple):
    """The operator needs ``verbs`` on ``resource`` (a plural, or plural/subresource)
    of API ``group`` ("" is the core group)."""

    group: str
    resource: str
    verbs: frozenset[str]
    why: str


_LOOM_PLURALS = tuple(info.plural for info in KINDS.values())

RBAC_NEEDS: tuple[RbacNeed, ...] = (
    *(
        RbacNeed(
            GROUP,
            plural,
            frozenset({"get", "list", "watch", "patch"}),
            "kopf lists/watches cluster-wide and patches its finalizer and annotations; "
            "the operator gets the objects one refers to (an Evaluation's spec.champion refers to a Deployment)",
        )
        for plural in _LOOM_PLURALS
    ),
    *(
        RbacNeed(GROUP, f"{plural}/status", frozenset({"patch"}), "the operator merge-patches status")
        for plural in _LOOM_PLURALS
    ),
    *(
        RbacNeed(
            GROUP,
            f"{plural}/finalizers",
            frozenset({"update"}),
            "children's ownerReferences set blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
        )
        for plural in _LOOM_PLURALS
    ),
    RbacNeed("batch", "jobs", frozenset({"get", "create"}), "ingest, label and evaluate workload Jobs"),
    RbacNeed("kubeflow.org", "pytorchjobs", frozenset({"get", "create", "list", "watch"}),
             "TrainingRun's PyTorchJob; kopf lists/watches them into an index (no GET per run per tick)"),
    RbacNeed("trainer.kubeflow.org", "trainjobs", frozenset({"get", "create"}),
             "TrainingRun's TrainJob (spec.backend trainjob, Kubeflow Trainer v2)"),
    RbacNeed("kueue.x-k8s.io", "localqueues", frozenset({"get"}),
             "TrainingRun spec.queue: the operator checks the LocalQueue exists before creating the job"),
    RbacNeed(
        "serving.kserve.io",
        "inferenceservices",
        frozenset({"get", "create", "patch"}),
        "Deployment's InferenceService; canary rollout and rollback are merge patches",
    ),
    RbacNeed("", "events", frozenset({"create"}), "kopf.event posts core v1 Events (never patched)"),
    RbacNeed(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        frozenset({"list", "watch"}),
        "kopf's resource observer watches CRDs (settings.scanning is left enabled)",
    ),
)

