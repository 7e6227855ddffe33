"""Rollout webhooks: an HTTP POST with Flagger's payload, 2xx means yes.

Payload (as Flagger sends it, https://docs.flagger.app/usage/webhooks):
{"name": <Deployment>, "namespace": ..., "phase": <rollout phase>,
 "checksum": <canary model digest>, "type": <webhook type>, "metadata": {...}}.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def payload(body: dict[str, Any], hook: dict[str, Any], phase: str, checksum: str) -> dict[str, Any]:
    meta = body["metadata"]
    return {"name": meta["name"], "namespace": meta["namespace"], "phase": phase, "checksum": checksum,
            "type": hook["type"], "metadata": dict(hook.get("metadata") or {})}


def call(hook: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """POST and report {type, ok, message}; an unreachable hook is not ok."""
    req = urllib.request.Request(hook["url"], data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=hook.get("timeoutSeconds", 10)) as resp:
            return {"type": hook["type"], "ok": 200 <= resp.status < 300, "message": f"HTTP {resp.status}"}
    except urllib.error.HTTPError as exc:
        return {"type": hook["type"], "ok": False, "message": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError) as exc:
        return {"type": hook["type"], "ok": False, "message": f"unreachable: {type(exc).__name__}"}
