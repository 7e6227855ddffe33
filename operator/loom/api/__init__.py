"""The Loom API (group loom.dev, version v1alpha1): pydantic models of every
kind's spec and status, the kind registry, and helpers.

    from loom.api import KINDS, parse_spec, status_dict, DatasetSpec, DatasetStatus

``python -m loom.api.crdgen crds/`` generates the CRDs from these models.
"""

from .common import (
    ArtifactRef,
    BaseStatus,
    CelRule,
    Condition,
    ObjectReference,
    SplitRef,
    Splits,
)
from .dataset import DatasetSource, DatasetSpec, DatasetStatus, Provenance, SplitSpec
from .deployment import CanarySpec, DeploymentSpec, DeploymentStatus
from .evaluation import METRICS, Check, EvaluationSpec, EvaluationStatus, Threshold
from .labeljob import Agreement, AnnotationSource, LabelJobSpec, LabelJobStatus
from .rbac import RBAC_NEEDS, RbacNeed
from .registry import (
    KINDS,
    KindInfo,
    PrinterColumn,
    SpecError,
    kind_info,
    parse_spec,
    parse_status,
    status_dict,
)
from .trainingrun import (
    Hyperparameters,
    ModelSpec,
    Resources,
    TrainingRunSpec,
    TrainingRunStatus,
)

__all__ = [
    "KINDS",
    "METRICS",
    "RBAC_NEEDS",
    "Agreement",
    "AnnotationSource",
    "ArtifactRef",
    "BaseStatus",
    "CanarySpec",
    "CelRule",
    "Check",
    "Condition",
    "DatasetSource",
    "DatasetSpec",
    "DatasetStatus",
    "DeploymentSpec",
    "DeploymentStatus",
    "EvaluationSpec",
    "EvaluationStatus",
    "Hyperparameters",
    "KindInfo",
    "LabelJobSpec",
    "LabelJobStatus",
    "ModelSpec",
    "ObjectReference",
    "PrinterColumn",
    "Provenance",
    "RbacNeed",
    "Resources",
    "SpecError",
    "SplitRef",
    "SplitSpec",
    "Splits",
    "Threshold",
    "TrainingRunSpec",
    "TrainingRunStatus",
    "kind_info",
    "parse_spec",
    "parse_status",
    "status_dict",
]
