"""A small JSON client over the Kubernetes API, shared by the executor's controllers.

Objects are plain dicts exactly as the API serves them (camelCase); patches are
JSON merge patches. Built on :class:`kubernetes.client.ApiClient`, so it honours
whatever a kubeconfig says (host, TLS, token).
"""
from __future__ import annotations

import datetime as _dt
import json
import threading
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from loom.reconcile.common import get_condition, now_iso

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def base(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        p = self.base()
        if namespace is not None:
            p += f"/namespaces/{namespace}"
        p += f"/{self.plural}"
        if name is not None:
            p += f"/{name}"
            if sub:
                p += f"/{sub}"
        return p


PODS = Resource("", "v1", "pods", "Pod")
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
EVENTS = Resource("", "v1", "events", "Event")
JOBS = Resource("batch", "v1", "jobs", "Job")
PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
INFERENCESERVICES = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")


def now() -> str:
    """RFC 3339 UTC timestamp, second precision, as the API server writes them."""
    return now_iso(_dt.datetime.now(_dt.timezone.utc))


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


class Kube:
    """Thread-safe enough for the executor: one ApiClient, guarded by a lock
    (urllib3's pool is thread-safe, the generated client's header handling is not)."""

    def __init__(self, api_client: k8s.ApiClient | str | None = None) -> None:
        if api_client is None or isinstance(api_client, str):
            configuration = k8s.Configuration()
            k8s_config.load_kube_config(config_file=api_client, client_configuration=configuration)
            api_client = k8s.ApiClient(configuration)
        self.api = api_client
        self._lock = threading.Lock()

    def close(self) -> None:
        try:
            self.api.close()
        except Exception:  # pragma: no cover - best effort
            pass

    def _call(self, method: str, path: str, body: Any = None, query: list | None = None,
              content_type: str = "application/json", timeout: float = 10.0) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        with self._lock:
            resp = self.api.call_api(
                path, method, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
                _request_timeout=timeout,
            )
        data = resp.data
        return json.loads(data) if data else None

    # -- reads -------------------------------------------------------------
    def list(self, res: Resource, namespace: str | None = None) -> list[Obj]:
        out = self._call("GET", res.path(namespace))
        items = (out or {}).get("items") or []
        for item in items:  # lists omit kind/apiVersion per item
            item.setdefault("kind", res.kind)
            item.setdefault("apiVersion", res.api_version)
        return items

    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        try:
            return self._call("GET", res.path(namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    # -- writes ------------------------------------------------------------
    def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        body = dict(body)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        return self._call("POST", res.path(namespace), body=body)

    def patch(self, res: Resource, namespace: str, name: str, patch: Obj, status: bool = False) -> Obj | None:
        """Merge patch; on the status subresource when ``status``. None when the object is gone."""
        try:
            return self._call("PATCH", res.path(namespace, name, "status" if status else None), body=patch,
                              content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete(self, res: Resource, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", res.path(namespace, name))
        except ApiException as e:
            if e.status != 404:
                raise

    def event(self, obj: Obj, reason: str, message: str, type_: str = "Normal",
              component: str = "loom-local-executor") -> None:
        """Record an Event about ``obj`` (best effort)."""
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        import secrets as _secrets

        ts = now()
        body = {
            "metadata": {"name": f"{meta.get('name', 'obj')}.{_secrets.token_hex(8)}", "namespace": ns},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": meta.get("name"), "namespace": ns, "uid": meta.get("uid")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component}, "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "reportingComponent": component,
        }
        try:
            self.create(EVENTS, ns, body)
        except Exception:
            pass


def status_diff(current: Obj | None, desired: Obj) -> Obj | None:
    """A merge patch that turns ``current`` status into ``desired`` (top-level keys;
    keys absent from ``desired`` are removed); None when nothing changes."""
    current = current or {}
    patch: Obj = {}
    for k, v in desired.items():
        if current.get(k) != v:
            patch[k] = v
    for k in current:
        if k not in desired:
            patch[k] = None
    return patch or None


def set_condition(conditions: list[Obj], type_: str, status: str, reason: str | None = None,
                  message: str | None = None, **extra: Any) -> list[Obj]:
    """Upsert a condition; lastTransitionTime changes only when status changes."""
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = now()
            c["status"] = status
            for key, val in (("reason", reason), ("message", message)):
                if val is None:
                    c.pop(key, None)
                else:
                    c[key] = val
            c.update(extra)
            return out
    c = {"type": type_, "status": status, "lastTransitionTime": now()}
    if reason is not None:
        c["reason"] = reason
    if message is not None:
        c["message"] = message
    c.update(extra)
    out.append(c)
    return out


def finished_as(status: Obj | None, *types: str) -> str | None:
    """The first of the terminal condition ``types`` that is True in ``status``
    (a Job: Complete, Failed; a PyTorchJob: Succeeded, Failed), else None."""
    for t in types:
        c = get_condition((status or {}).get("conditions"), t)
        if c and c.get("status") == "True":
            return t
    return None
