"""The chart's ClusterRole (loom.api.RBAC_NEEDS) against what the operator really calls.

The operator runs with its own token; the embedded API server's audit records every
request. It must run last among the integration tests (pytest runs the files in
alphabetical order), so that by then the chain, canary promotion and rollback
(test_chain, test_delivery_it), a Kueue LocalQueue lookup (test_kueue_training_it)
and the reads of parents missing from the operator's index (test_any_order_it)
have gone through the operator. Run alone, it reports those grants as unused.
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
