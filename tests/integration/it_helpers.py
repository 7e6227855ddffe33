"""Small readers of status, and of admission refusals, used by the integration tests."""
from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.dynamic.exceptions import DynamicApiError


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def refusal(env: Any, manifest: dict[str, Any]) -> str:
    """Apply a manifest the API server must refuse at admission (422); return its message."""
    with pytest.raises(DynamicApiError) as err:
        env.applier.apply(manifest)
    assert err.value.status == 422, err.value
    body = err.value.body.decode() if isinstance(err.value.body, bytes) else str(err.value.body)
    return json.loads(body)["message"]
