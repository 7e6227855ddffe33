"""The chart's ClusterRole (loom.api.RBAC_NEEDS) against what the operator really calls.

The operator runs with its own token; the embedded API server's audit records every
request. Runs after test_chain (alphabetical order), so the whole chain, a canary
promotion and a rollback have gone through the operator by then.
"""
from __future__ import annotations

import pytest

from conftest import OPERATOR_TOKEN
from loom.api import RBAC_NEEDS

pytestmark = pytest.mark.integration
# Checked by admission on a real cluster, never called: setting blockOwnerDeletion on a
# child's ownerReference needs update on the owner's finalizers.
PERMISSION_ONLY = {(n.group, n.resource, v) for n in RBAC_NEEDS if n.resource.endswith("/finalizers") for v in n.verbs}
# The embedded cluster has no Kubeflow Trainer v2 controller: TrainJobs are checked by unit tests only.
PERMISSION_ONLY |= {(n.group, n.resource, v) for n in RBAC_NEEDS if n.resource == "trainjobs" for v in n.verbs}


def test_operator_calls_exactly_what_its_role_grants(env):
    granted = {(n.group, n.resource, v) for n in RBAC_NEEDS for v in n.verbs}
    called = {
        (a["group"], a["resource"] + (f"/{a['subresource']}" if a["subresource"] else ""), a["verb"])
        for a in list(env.cluster.apiserver.audit)
        if a["user"] == OPERATOR_TOKEN
    }
    assert called, "no request from the operator was recorded"
    assert called <= granted, f"the operator needs what its role does not grant: {sorted(called - granted)}"
    assert granted - PERMISSION_ONLY <= called, f"granted but never used: {sorted(granted - PERMISSION_ONLY - called)}"
