"""Apply YAML manifests the way `kubectl apply` does for a new object: create, else merge-patch.

Used by the demo and the tests; it goes through API discovery (the dynamic
client), so it exercises the API server the way kubectl does.
"""
from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Iterable

import yaml
from kubernetes import dynamic
from kubernetes.client import ApiClient
from kubernetes.dynamic.exceptions import ConflictError


def load(path: str | Path, variables: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Documents of a YAML file; ${VAR} are filled from `variables`, then the environment."""
    text = Path(path).read_text()
    if variables is not None:
        text = string.Template(text).safe_substitute({**os.environ, **variables})
    return [d for d in yaml.safe_load_all(text) if d]


class Applier:
    def __init__(self, api_client: ApiClient):
        self.client = dynamic.DynamicClient(api_client)

    def resource(self, manifest: dict[str, Any]):
        return self.client.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        res = self.resource(manifest)
        ns = manifest["metadata"].get("namespace") if res.namespaced else None
        try:
            return res.create(body=manifest, namespace=ns).to_dict()
        except ConflictError:
            return res.patch(body=manifest, name=manifest["metadata"]["name"], namespace=ns,
                             content_type="application/merge-patch+json").to_dict()

    def apply_all(self, manifests: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.apply(m) for m in manifests]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        res = self.client.resources.get(api_version=api_version, kind=kind)
        try:
            return res.get(name=name, namespace=namespace).to_dict()
        except dynamic.exceptions.NotFoundError:
            return None
