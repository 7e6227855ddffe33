"""OpenAPI v3 documents, enough for kubectl.

kubectl reads them to learn that the server validates fields itself (the
``fieldValidation`` query parameter on PATCH; otherwise it wants the protobuf
OpenAPI v2 to validate client-side) and for ``kubectl explain`` (the schema of
a kind, found by its ``x-kubernetes-group-version-kind``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from loom.local.store import ResourceType

Obj = dict[str, Any]

# The one Kubernetes version the server claims: in /version and in the OpenAPI documents.
SERVER_VERSION: dict[str, str] = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(rtype: ResourceType, version: str) -> str:
    # The naming of kube-openapi: reversed group, e.g. dev.loom.v1alpha1.Dataset.
    group = ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    return f"{group}.{version}.{rtype.kind}"


def gv_document(rtypes: list[ResourceType], group: str, version: str) -> Obj:
    paths: Obj = {}
    schemas: Obj = {}
    for rtype in rtypes:
        gvk = {"group": rtype.group, "version": version, "kind": rtype.kind}
        name = schema_name(rtype, version)
        ref = {"$ref": f"#/components/schemas/{name}"}
        schema = dict(rtype.schemas.get(version) or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        schema.setdefault("description", f"{rtype.kind} is served by the embedded Loom API server.")
        props = dict(schema.get("properties") or {})
        props.setdefault("apiVersion", {"type": "string", "description": "APIVersion of the object."})
        props.setdefault("kind", {"type": "string", "description": "Kind of the object."})
        props.setdefault("metadata", {"type": "object", "description": "Standard object metadata."})
        schema["properties"] = props
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = schema
        base = "/" + gv_path(group, version) + ("/namespaces/{namespace}" if rtype.namespaced else "")
        params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        if rtype.namespaced:
            params.append({"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}})
        query = [{"name": p, "in": "query", "schema": {"type": "string"}}
                 for p in ("dryRun", "fieldManager", "fieldValidation")]
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        op = {"x-kubernetes-group-version-kind": gvk, "responses": ok}
        paths[f"{base}/{rtype.plural}/{{name}}"] = {
            "parameters": params,
            "get": {**op, "operationId": f"read{rtype.kind}", "x-kubernetes-action": "get"},
            "put": {**op, "operationId": f"replace{rtype.kind}", "x-kubernetes-action": "put", "parameters": query},
            "patch": {**op, "operationId": f"patch{rtype.kind}", "x-kubernetes-action": "patch", "parameters": query},
            "delete": {**op, "operationId": f"delete{rtype.kind}", "x-kubernetes-action": "delete"},
        }
        paths[f"{base}/{rtype.plural}"] = {
            "post": {**op, "operationId": f"create{rtype.kind}", "x-kubernetes-action": "post", "parameters": query},
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def root_document(gvs: dict[str, Obj]) -> Obj:
    """``/openapi/v3``: where each group-version's document lives (with a content hash)."""
    out = {}
    for path, doc in gvs.items():
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        out[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": out}
