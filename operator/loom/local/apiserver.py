"""The embedded Kubernetes API server: kmock's ``KubernetesEmulator``, made real enough.

kmock gives the HTTP plumbing (request buffering and parsing, the handler
protocol); this subclass replaces its storage and its k8s semantics with what
kopf, the kubernetes client and kubectl rely on: uids, a global
resourceVersion with an event log (watches resume from a version), generation,
status subresources, the patch content types, CRD registration with schema,
defaults, pruning and CEL admission, finalizers and ownerReference cascade, List
kinds, Status errors, discovery.

Use ``EmbeddedApiServer`` from synchronous code (it runs its own loop in a
thread) or ``AsyncApiServer`` inside a running event loop.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import re
import itertools
import threading
import traceback
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp.web
import attrs
import yaml
from kmock._internal import rendering
from kmock._internal.k8s import KubernetesEmulator

from loom.local import admission, openapi, patching
from loom.local.store import ApiError, Obj, ResourceType, Store, clone, match_fields, match_labels, not_found, \
    parse_field_selector, parse_label_selector

logger = logging.getLogger(__name__)

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]
MAX_BODY = 64 * 1024 * 1024  # CRDs of real controllers (kubeflow, kserve) are far over aiohttp's 1 MiB
AUDIT_LIMIT = 200_000  # audit entries kept (the oldest tenth goes when it is reached)
DEFAULT_TOKEN = "loom-local-token"


def _rt(group: str, version: str, plural: str, kind: str, *, namespaced: bool = True, status: bool = False,
        short: tuple[str, ...] = (), categories: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group=group, versions=[version], plural=plural, singular=kind.lower(), kind=kind,
                        namespaced=namespaced, status=status, short_names=list(short), categories=list(categories))


def builtin_types() -> list[ResourceType]:
    """What a bare cluster with the Kubeflow training operator and KServe installed serves."""
    return [
        _rt("", "v1", "namespaces", "Namespace", namespaced=False, status=True, short=("ns",)),
        _rt("", "v1", "pods", "Pod", status=True, short=("po",), categories=("all",)),
        _rt("", "v1", "secrets", "Secret"),
        _rt("", "v1", "configmaps", "ConfigMap", short=("cm",)),
        _rt("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
        _rt("", "v1", "services", "Service", status=True, short=("svc",), categories=("all",)),
        _rt("", "v1", "events", "Event", short=("ev",)),
        _rt("events.k8s.io", "v1", "events", "Event", short=("ev",)),
        _rt("batch", "v1", "jobs", "Job", status=True, categories=("all",)),
        _rt("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", status=True),
        _rt("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService", status=True, short=("isvc",)),
        _rt("coordination.k8s.io", "v1", "leases", "Lease"),
        _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
            namespaced=False, status=True, short=("crd", "crds")),
    ]


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: Obj) -> Obj:
    # What bumps metadata.generation: everything but metadata and status.
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _random_suffix(n: int = 5) -> str:
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def _human_age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 60):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath that printer columns use: .a.b, [0], [?(@.k=="v")]."""
    tokens = re.findall(r'\.([\w-]+)|\[(\d+)\]|\[\?\(@\.([\w-]+)\s*==\s*["\']([^"\']*)["\']\)\]', path)
    node = obj
    for key, index, fkey, fvalue in tokens:
        if key:
            node = node.get(key) if isinstance(node, dict) else None
        elif index:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = next((x for x in node if isinstance(x, dict) and str(x.get(fkey)) == fvalue), None) \
                if isinstance(node, list) else None
        if node is None:
            return None
    return node


class _Server(aiohttp.web.Server):
    def _make_request(self, message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
        return aiohttp.web.BaseRequest(message, payload, protocol, writer, task, self._loop, client_max_size=MAX_BODY)


@attrs.define(kw_only=True)
class LoomKubernetes(KubernetesEmulator):
    """The request handler: every request is answered by ``_route`` over our own ``Store``."""

    store: Store = attrs.field(factory=Store, init=False)
    # One entry per request to a resource (see ``_audit``); appended on the server's loop only.
    audit: list[dict[str, str]] = attrs.field(factory=list)
    _request_ids: Iterator[int] = attrs.field(factory=itertools.count, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for rtype in builtin_types():
            self.store.register(rtype)
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        for name in ("default", "kube-system", "kube-public"):
            ns["metadata"] = {"name": name}
            self._create_object(self.store.types[NS_KEY], "v1", None, clone(ns), {})

    # --- the entry point ----------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own parsing (Request._parse) fails on /api/v1/namespaces and decodes bodies by
        # guessing; we build its Request from the raw HTTP and parse k8s paths ourselves (_route).
        # kmock's own request log (``_requests``) is not kept: we run for hours.
        body = await raw_request.read()
        request = rendering.Request(
            id=next(self._request_ids), raw_request=raw_request, url=raw_request.url, method=raw_request.method,
            params=dict(raw_request.query), headers=dict(raw_request.headers), body=body,
        )
        return await self._handle(request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        except Exception as exc:  # noqa: BLE001 - answered as a Status, logged with the traceback
            logger.exception("apiserver: %s %s failed", request.method, request.url)
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}",
                             {"causes": [{"message": traceback.format_exc()}]})
            return aiohttp.web.json_response(error.status(), status=500)

    async def _route(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        method = str(request.method.value).upper()
        if path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        if method == "GET" and path == "/version":
            return self._json(dict(openapi.SERVER_VERSION))
        if method == "GET" and path == "/api":
            return self._json({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
                               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host}]})
        if method == "GET" and path == "/apis":
            return self._json(self._group_list())
        if method == "GET" and path.startswith("/openapi/v3"):
            return self._json(self._openapi(path[len("/openapi/v3"):].strip("/")))
        if method == "GET" and path == "/":
            return self._json({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/version"]})
        parsed = self._parse_path(path)
        if parsed is None:
            raise not_found(None)
        group, version, namespace, plural, name, sub = parsed
        if plural is None:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return self._json(self._discovery(group, version))
        self._audit(request, method, group, version, namespace, plural, name, sub)
        rtype = self.store.find_type(group, version, plural)
        if rtype is None:
            raise not_found(None)
        if sub not in (None, "status") or (sub == "status" and not rtype.status):
            raise not_found(None)
        if namespace is not None and not rtype.namespaced:
            raise not_found(None)
        params = dict(request.params)
        if method == "GET" and str(params.get("watch", "")).lower() in ("true", "1"):
            return await self._watch(request, rtype, version, namespace, name, params)
        if method == "GET" and name is None:
            return self._list(request, rtype, version, namespace, params)
        if method == "GET":
            return self._json(self._present(rtype, version, self._get_or_404(rtype, namespace, name, copy=False)))
        if method == "POST" and name is None:
            body = self._body(request)
            obj = self._create_object(rtype, version, namespace, body, params)
            return self._json(self._present(rtype, version, obj), status=201)
        if method == "PUT" and name is not None:
            return self._json(self._present(rtype, version, self._put(rtype, version, namespace, name, sub, request, params)))
        if method == "PATCH" and name is not None:
            obj, created = self._patch(rtype, version, namespace, name, sub, request, params)
            return self._json(self._present(rtype, version, obj), status=201 if created else 200)
        if method == "DELETE" and name is not None:
            options = self._body(request, optional=True)
            if options is None:
                options = {}
            if not isinstance(options, dict) or not isinstance(options.get("preconditions") or {}, dict):
                raise ApiError(400, "BadRequest", "the body of a DELETE must be DeleteOptions (an object)")
            return self._json(self._present(rtype, version, self._delete(rtype, namespace, name, options, params)))
        if method == "DELETE":
            return self._delete_collection(rtype, version, namespace, params)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _audit(self, request: rendering.Request, method: str, group: str, version: str, namespace: str | None,
               plural: str, name: str | None, sub: str | None) -> None:
        """Record who asked for what, as the Kubernetes audit log's user, verb and objectRef do."""
        if method == "GET":
            watch = str(request.params.get("watch", "")).lower() in ("true", "1")
            verb = "watch" if watch else "get" if name is not None else "list"
        elif method == "DELETE":
            verb = "delete" if name is not None else "deletecollection"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = str(auth).partition(" ")
        entry = {"user": token.strip() if scheme.lower() == "bearer" else "", "verb": verb, "group": group,
                 "version": version, "resource": plural, "subresource": sub or "", "namespace": namespace or ""}
        if len(self.audit) >= AUDIT_LIMIT:
            del self.audit[:max(AUDIT_LIMIT // 10, 1)]
        self.audit.append(entry)  # one atomic append: readers in other threads see whole entries

    @staticmethod
    def _parse_path(path: str) -> tuple[str, str, str | None, str | None, str | None, str | None] | None:
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        elif len(parts) == 2 and parts[0] == "apis":
            return parts[1], "", None, None, None, None
        else:
            return None
        namespace = None
        # /namespaces/NS/PLURAL/... is namespaced; /namespaces/NAME[/status] is the namespace itself.
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            return None
        rest += [None] * (3 - len(rest))  # type: ignore[list-item]
        return group, version, namespace, rest[0], rest[1], rest[2]

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")

    @staticmethod
    def _body(request: rendering.Request, optional: bool = False) -> Any:
        raw = request.body or b""
        if not raw.strip():
            if optional:
                return None
            raise ApiError(400, "BadRequest", "the request body is empty")
        content_type = request.headers.get("Content-Type", "")
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from None

    @staticmethod
    def _present(rtype: ResourceType, version: str, obj: Obj) -> Obj:
        # Objects are stored version-less; they are answered in the version asked for.
        out = {"apiVersion": rtype.api_version(version), "kind": rtype.kind}
        out.update({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})
        return out

    def _get_or_404(self, rtype: ResourceType, namespace: str | None, name: str, copy: bool = True) -> Obj:
        """The stored object; a copy unless the caller only reads it (copy=False)."""
        obj = self.store.get(rtype.key, namespace or "" if rtype.namespaced else "", name)
        if obj is None:
            raise not_found(rtype, name)
        return clone(obj) if copy else obj

    def _conflict(self, rtype: ResourceType, name: str) -> ApiError:
        return ApiError(409, "Conflict",
                        f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": the object has been '
                        f"modified; please apply your changes to the latest version and try again",
                        {"name": name, "group": rtype.group, "kind": rtype.plural})

    # --- discovery ------------------------------------------------------------------------------

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rtype in self.store.types.values():
            if rtype.group:
                versions = groups.setdefault(rtype.group, [])
                versions += [v for v in rtype.versions if v not in versions]
        return groups

    def _api_group(self, group: str, versions: list[str]) -> Obj:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _group_list(self) -> Obj:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._api_group(g, vs) for g, vs in sorted(self._group_versions().items())]}

    def _discovery(self, group: str, version: str) -> Obj:
        if not version:  # /apis/GROUP
            versions = self._group_versions().get(group)
            if not versions:
                raise not_found(None)
            return {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(group, versions)}
        rtypes = [rt for rt in self.store.types.values() if rt.group == group and version in rt.versions]
        if not rtypes and not (group == "" and version == "v1"):
            raise not_found(None)
        resources = []
        for rt in sorted(rtypes, key=lambda r: r.plural):
            entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                     "verbs": VERBS, "shortNames": rt.short_names, "categories": rt.categories}
            entry = {k: v for k, v in entry.items() if v != []}
            resources.append(entry)
            if rt.status:
                resources.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                                  "kind": rt.kind, "verbs": SUBRESOURCE_VERBS})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    def _openapi(self, gv: str) -> Obj:
        docs: dict[str, Obj] = {}
        by_gv: dict[tuple[str, str], list[ResourceType]] = {}
        for rtype in self.store.types.values():
            for version in rtype.versions:
                by_gv.setdefault((rtype.group, version), []).append(rtype)
        for (group, version), rtypes in by_gv.items():
            if not gv or gv == openapi.gv_path(group, version):
                docs[openapi.gv_path(group, version)] = openapi.gv_document(rtypes, group, version)
        if not gv:
            return openapi.root_document(docs)
        if gv not in docs:
            raise not_found(None)
        return docs[gv]

    # --- reading ------------------------------------------------------------------------------

    def _selected(self, params: dict[str, str]) -> Any:
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(params.get("fieldSelector", ""))

        def check(obj: Obj, namespace: str | None, name: str | None) -> bool:
            meta = obj.get("metadata", {})
            return ((namespace is None or meta.get("namespace") == namespace)
                    and (name is None or meta.get("name") == name)
                    and match_labels(meta.get("labels") or {}, labels)
                    and match_fields(obj, fields))
        return check

    def _list(self, request: rendering.Request, rtype: ResourceType, version: str, namespace: str | None,
              params: dict[str, str]) -> aiohttp.web.Response:
        check = self._selected(params)
        items = [self._present(rtype, version, obj) for obj in self.store.items(rtype.key, namespace)
                 if check(obj, None, None)]
        rv = str(self.store.rv)
        if "as=Table" in request.headers.get("Accept", ""):
            return self._json(self._table(rtype, version, items, rv, params))
        return self._json({"kind": rtype.list_kind, "apiVersion": rtype.api_version(version),
                           "metadata": {"resourceVersion": rv}, "items": items})

    def _table(self, rtype: ResourceType, version: str, items: list[Obj], rv: str, params: dict[str, str]) -> Obj:
        """Server-side printing for ``kubectl get``: Name, the CRD's printer columns, Age."""
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        extra = rtype.printer_columns.get(version) or []
        for col in extra:
            columns.append({"name": col["name"], "type": col.get("type", "string"), "format": col.get("format", ""),
                            "description": col.get("description", ""), "priority": col.get("priority", 0)})
        if not any(c["name"] == "Age" for c in columns):
            columns.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for col in extra:
                value = _jsonpath(obj, col.get("jsonPath", ""))
                if col.get("type") == "date" and value:
                    value = _human_age(value)
                cells.append(value if value is not None else "<none>" if col.get("type") == "string" else None)
            if len(cells) < len(columns):
                cells.append(_human_age(obj["metadata"].get("creationTimestamp")))
            shown = obj if params.get("includeObject") == "Object" else {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
            rows.append({"cells": cells, "object": shown})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
                "columnDefinitions": columns, "rows": rows}

    async def _watch(self, request: rendering.Request, rtype: ResourceType, version: str, namespace: str | None,
                     name: str | None, params: dict[str, str]) -> aiohttp.web.StreamResponse:
        check = self._selected(params)
        loop = asyncio.get_running_loop()
        try:
            timeout = int(params.get("timeoutSeconds") or 0)
            if timeout < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, "BadRequest", f'invalid timeoutSeconds: "{params["timeoutSeconds"]}": '
                                              f"must be a whole number of seconds") from None
        deadline = loop.time() + timeout if timeout else None
        since = params.get("resourceVersion") or "0"
        # Take the starting events and subscribe with no await in between: no event can slip through.
        if since == "0":
            initial = [("ADDED", obj) for obj in self.store.items(rtype.key, namespace)]
        else:
            try:
                history = self.store.history_since(rtype.key, int(since))
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion: {since}") from None
            if history is None:
                initial = None
            else:
                initial = [(event.type, event.obj) for event in history]
        watcher = self.store.subscribe(rtype.key)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            assert request._raw_request is not None
            await response.prepare(request._raw_request)
            if initial is None:  # the log no longer reaches back that far
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({self.store.rv})")
                await response.write(json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n")
                await response.write_eof()
                return response

            async def send(event_type: str, obj: Obj) -> None:
                if check(obj, namespace, name):
                    event = {"type": event_type, "object": self._present(rtype, version, obj)}
                    await response.write(json.dumps(event).encode() + b"\n")

            for event_type, obj in initial:
                await send(event_type, obj)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=remaining)
                except asyncio.TimeoutError:
                    break
                if event is None:  # the server is stopping
                    break
                await send(event.type, event.obj)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away
        finally:
            self.store.unsubscribe(watcher)
        return response

    # --- writing ------------------------------------------------------------------------------

    def _admit(self, rtype: ResourceType, version: str, obj: Obj, old: Obj | None, params: dict[str, str]) -> None:
        if rtype.key == CRD_KEY:
            errors = self._validate_crd(obj)
        else:
            pruned: list[str] = []
            errors = admission.admit(rtype.schemas.get(version), obj, old, pruned)
            if pruned and params.get("fieldValidation") == "Strict":  # kubectl apply asks for it
                unknown = ", ".join(f'unknown field "{p}"' for p in pruned)
                raise ApiError(400, "BadRequest", f"strict decoding error: {unknown}")
        if errors:
            name = obj.get("metadata", {}).get("name", "")
            raise ApiError(422, "Invalid", admission.invalid_error_message(rtype.group_kind, name, errors),
                           {"name": name, "group": rtype.group, "kind": rtype.kind,
                            "causes": [e.cause() for e in errors]})

    def _create_object(self, rtype: ResourceType, version: str, namespace: str | None, body: Any,
                       params: dict[str, str]) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        obj = clone(body)
        meta = obj.get("metadata")
        meta = obj["metadata"] = dict(meta) if isinstance(meta, dict) else {}
        if rtype.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the namespace sent on the request")
            namespace = namespace or meta.get("namespace") or "default"
            ns = self.store.get(NS_KEY, "", namespace)
            if ns is None:
                raise not_found(self.store.types[NS_KEY], namespace)
            if ns["metadata"].get("deletionTimestamp"):
                # As the NamespaceLifecycle admission plugin: nothing new in a namespace being deleted
                # (it would keep the namespace Terminating for ever).
                raise ApiError(403, "Forbidden",
                               f'{rtype.group_resource} "{meta.get("name") or ""}" is forbidden: unable to create '
                               f"new content in namespace {namespace} because it is being terminated",
                               {"name": meta.get("name") or "", "group": rtype.group, "kind": rtype.plural,
                                "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                            "message": f"namespace {namespace} is being terminated"}]})
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", f'{rtype.group_kind} "" is invalid: metadata.name: Required value: '
                                               f"name or generateName is required",
                               {"kind": rtype.kind, "causes": [{"reason": "FieldValueRequired", "field": "metadata.name",
                                                                "message": "Required value: name or generateName is required"}]})
            meta["name"] = meta["generateName"] + _random_suffix()
        name = meta["name"]
        if self.store.get(rtype.key, meta.get("namespace", ""), name) is not None:
            raise ApiError(409, "AlreadyExists", f'{rtype.group_resource} "{name}" already exists',
                           {"name": name, "group": rtype.group, "kind": rtype.plural})
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["generation"] = 1
        obj["apiVersion"], obj["kind"] = rtype.api_version(version), rtype.kind
        if rtype.status:
            obj.pop("status", None)  # status is written through /status only
        self._admit(rtype, version, obj, None, params)
        if rtype.key == NS_KEY:
            obj["status"] = {"phase": "Active"}
        if rtype.key == CRD_KEY:
            self._crd_status(obj)
        if params.get("dryRun"):
            return obj
        stored = self.store.put(rtype.key, obj, "ADDED")
        if rtype.key == CRD_KEY:
            self._register_crd(stored)
        return stored

    def _put(self, rtype: ResourceType, version: str, namespace: str | None, name: str, sub: str | None,
             request: rendering.Request, params: dict[str, str]) -> Obj:
        body = self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        if (body.get("metadata") or {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        old = self._get_or_404(rtype, namespace, name)
        return self._update(rtype, version, old, body, sub, params)

    def _patch(self, rtype: ResourceType, version: str, namespace: str | None, name: str, sub: str | None,
               request: rendering.Request, params: dict[str, str]) -> tuple[Obj, bool]:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = self._body(request)
        existing = self.store.get(rtype.key, namespace or "" if rtype.namespaced else "", name)
        if content_type == "application/apply-patch+yaml":
            # Server-side apply, simplified: a merge patch of the applied body; creates if missing.
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the applied configuration must be an object")
            if not isinstance(body.get("metadata", {}), dict):
                raise ApiError(400, "BadRequest", "the applied configuration's metadata must be an object")
            if existing is None:
                body.setdefault("metadata", {})["name"] = name
                return self._create_object(rtype, version, namespace, body, params), True
            new = patching.merge_patch(existing, body)
        elif existing is None:
            raise not_found(rtype, name)
        elif content_type == "application/json-patch+json":
            try:
                new = patching.json_patch(clone(existing), body)
            except patching.PatchTestFailed as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
            except patching.PatchInvalid as exc:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {exc}") from None
        elif content_type == "application/merge-patch+json":
            new = patching.merge_patch(existing, body)
        elif content_type == "application/strategic-merge-patch+json":
            try:
                new = patching.strategic_merge_patch(existing, body)
            except patching.PatchInvalid as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patch did not result in an object")
        # The patches leave ``existing`` unchanged, and so does _update (it copies ``new`` first).
        return self._update(rtype, version, existing, new, sub, params), False

    def _update(self, rtype: ResourceType, version: str, old: Obj, new: Obj, sub: str | None,
                params: dict[str, str]) -> Obj:
        """``old`` is only read (it may be the stored object); ``new`` is copied before any change."""
        new = clone(new)
        old_meta = old["metadata"]
        name = old_meta["name"]
        given_rv = (new.get("metadata") or {}).get("resourceVersion")
        if given_rv and str(given_rv) != old_meta["resourceVersion"]:
            raise self._conflict(rtype, name)
        if sub == "status":
            # /status changes only .status.
            status = new.get("status")
            new = clone(old)
            new.pop("status", None)
            if status is not None:
                new["status"] = status
        else:
            if rtype.status:  # the main resource cannot change .status
                new.pop("status", None)
                if "status" in old:
                    new["status"] = clone(old["status"])
            if not isinstance(new.get("metadata"), dict):
                new["metadata"] = {}
        meta = new["metadata"]
        for key in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "resourceVersion"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if old_meta.get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or []):
            raise ApiError(422, "Invalid", f'{rtype.group_kind} "{name}" is invalid: metadata.finalizers: Forbidden: '
                                           f"no new finalizers can be added if the object is being deleted")
        new["apiVersion"], new["kind"] = rtype.api_version(version), rtype.kind
        # Status writes are validated and pruned too, as in Kubernetes: a status field the
        # schema does not declare would silently vanish on a real cluster.
        self._admit(rtype, version, new, old, params)
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        if rtype.key == CRD_KEY:
            self._crd_status(new)
        if params.get("dryRun"):
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, new)  # the last finalizer is gone: the deletion completes
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion (as in Kubernetes)
        stored = self.store.put(rtype.key, new, "MODIFIED")
        if rtype.key == CRD_KEY:
            self._register_crd(stored)
        return stored

    # --- deleting -----------------------------------------------------------------------------

    def _delete(self, rtype: ResourceType, namespace: str | None, name: str, options: Obj,
                params: dict[str, str]) -> Obj:
        obj = self._get_or_404(rtype, namespace, name)
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]) or \
                (pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]):
            raise self._conflict(rtype, name)
        if params.get("dryRun") or options.get("dryRun"):
            return obj
        return self._delete_object(rtype, obj)

    def _delete_object(self, rtype: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        if rtype.key == NS_KEY:
            return self._delete_namespace(rtype, obj)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj  # already being deleted; waits for its finalizers
            meta["deletionTimestamp"] = now_iso()
            meta["deletionGracePeriodSeconds"] = 0
            return self.store.put(rtype.key, obj, "MODIFIED")
        return self._remove(rtype, obj)

    def _remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        gone = self.store.remove(rtype.key, obj)
        if rtype.key == CRD_KEY:
            self._unregister_crd(obj)
        self._collect_garbage(obj)
        if obj["metadata"].get("namespace"):
            self._finish_namespace(obj["metadata"]["namespace"])
        return gone

    def _finish_namespace(self, name: str) -> Obj | None:
        """A terminating namespace goes away with its last object; answers it if it went now."""
        ns = self.store.get(NS_KEY, "", name)
        if ns and ns["metadata"].get("deletionTimestamp") and not any(True for _ in self.store.all_in_namespace(name)):
            return self.store.remove(NS_KEY, ns)
        return None

    def _collect_garbage(self, owner: Obj) -> None:
        """Background cascading deletion: dependents whose owners are all gone are deleted."""
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"].get("namespace")
        for key, dependent in self.store.dependents_of(uid):
            rtype = self.store.types.get(key)
            dmeta = dependent["metadata"]
            if rtype is None or self.store.get(key, dmeta.get("namespace") or "", dmeta["name"]) is not dependent:
                continue  # already gone (or changed) in a nested cascade
            if namespace and dmeta.get("namespace") != namespace:
                continue  # owner references never cross namespaces
            refs = dmeta.get("ownerReferences") or []
            if any(isinstance(ref, dict) and ref.get("uid") != uid and self.store.uid_exists(ref.get("uid"))
                   for ref in refs):
                continue  # another owner lives
            self._delete_object(rtype, clone(dependent))

    def _delete_namespace(self, rtype: ResourceType, ns: Obj) -> Obj:
        name = ns["metadata"]["name"]
        if not ns["metadata"].get("deletionTimestamp"):
            ns["metadata"]["deletionTimestamp"] = now_iso()
            ns["metadata"]["deletionGracePeriodSeconds"] = 0
            ns["status"] = {"phase": "Terminating"}
            ns = self.store.put(NS_KEY, ns, "MODIFIED")
        for key, obj in list(self.store.all_in_namespace(name)):
            current = self.store.get(key, name, obj["metadata"]["name"])
            if current is not None and key in self.store.types:
                self._delete_object(self.store.types[key], clone(current))
        return self._finish_namespace(name) or ns

    def _delete_collection(self, rtype: ResourceType, version: str, namespace: str | None,
                           params: dict[str, str]) -> aiohttp.web.Response:
        check = self._selected(params)
        deleted = [self._present(rtype, version, self._delete_object(rtype, clone(obj)))
                   for obj in self.store.items(rtype.key, namespace) if check(obj, None, None)]
        return self._json({"kind": rtype.list_kind, "apiVersion": rtype.api_version(version),
                           "metadata": {"resourceVersion": str(self.store.rv)}, "items": deleted})

    # --- CustomResourceDefinitions --------------------------------------------------------------

    def _validate_crd(self, crd: Obj) -> list[admission.FieldError]:
        errors = []
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for field in ("group", "names", "scope", "versions"):
            if not spec.get(field):
                errors.append(admission.FieldError(f"spec.{field}", "FieldValueRequired", "Required value"))
        for field in ("plural", "kind"):
            if spec.get("names") and not names.get(field):
                errors.append(admission.FieldError(f"spec.names.{field}", "FieldValueRequired", "Required value"))
        if spec.get("group") and names.get("plural") and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            errors.append(admission.FieldError("metadata.name", "FieldValueInvalid",
                                               f'Invalid value: "{crd["metadata"]["name"]}": must be spec.names.plural+"."+spec.group'))
        if spec.get("scope") and spec["scope"] not in ("Namespaced", "Cluster"):
            errors.append(admission.FieldError("spec.scope", "FieldValueNotSupported",
                                               f'Unsupported value: "{spec["scope"]}": supported values: "Cluster", "Namespaced"'))
        return errors

    @staticmethod
    def _crd_status(crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", names.get("kind", "").lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        now = now_iso()
        crd["status"] = {
            "acceptedNames": names,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        }

    def _register_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec.get("versions") or [] if v.get("served", True)]
        # The storage version first: it is the preferred one in discovery.
        served.sort(key=lambda v: not v.get("storage"))
        rtype = ResourceType(
            group=spec["group"], versions=[v["name"] for v in served], plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(), kind=names["kind"],
            list_kind=names.get("listKind", ""), namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=list(names.get("shortNames") or []), categories=list(names.get("categories") or []),
            status=any("status" in ((v.get("subresources") or {})) for v in served),
            schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") for v in served
                     if (v.get("schema") or {}).get("openAPIV3Schema")},
            printer_columns={v["name"]: v.get("additionalPrinterColumns") or [] for v in served},
        )
        if rtype.versions:
            self.store.register(rtype)

    def _unregister_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        # The custom resources go with their definition (watchers see them DELETED).
        for obj in self.store.items(key):
            self.store.remove(key, obj)
        self.store.unregister(key)
        # A built-in that a CRD had shadowed (e.g. kubeflow's PyTorchJob) comes back.
        for rtype in builtin_types():
            if rtype.key == key:
                self.store.register(rtype)


class AsyncApiServer:
    """The API server inside an already running event loop: ``await start()``, ``await stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.handler: LoomKubernetes | None = None
        self._runner: aiohttp.web.ServerRunner | None = None
        self.audit: list[dict[str, str]] = []  # see LoomKubernetes._audit

    async def start(self) -> None:
        self.handler = LoomKubernetes(audit=self.audit)
        # aiohttp's own low-level server, not kmock's Server: that one patches aiohttp's DNS
        # resolution process-wide, which a kopf operator in the same process would also go through.
        self._runner = aiohttp.web.ServerRunner(_Server(self.handler), handle_signals=False)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self.handler is not None:
            self.handler.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def write_kubeconfig(url: str, path: str | Path, token: str = DEFAULT_TOKEN) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "loom-local", "cluster": {"server": url}}],
        "users": [{"name": "loom-local", "user": {"token": token}}],
        "contexts": [{"name": "loom-local", "context": {"cluster": "loom-local", "user": "loom-local",
                                                        "namespace": "default"}}],
        "current-context": "loom-local",
        "preferences": {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


class EmbeddedApiServer:
    """The API server on loopback, in its own thread and event loop, for synchronous callers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = AsyncApiServer(host, port)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # One entry per request to a resource, oldest first, at most AUDIT_LIMIT:
        # {"user": the bearer token or "", "verb": get|list|watch|create|update|patch|delete|deletecollection,
        #  "group", "version", "resource" (plural), "subresource" (or ""), "namespace" (or "")}.
        # Readable from any thread; take list(server.audit) for a stable snapshot.
        self.audit: list[dict[str, str]] = self._server.audit

    def start(self) -> None:
        """Start serving; returns once the port accepts requests."""
        if self._thread is not None:
            raise RuntimeError("the API server is already started")
        self._thread = threading.Thread(target=self._run, name="loom-apiserver", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the API server failed to start: {self._error!r}") from self._error
        if not self._ready.is_set():
            raise RuntimeError("the API server did not start in 30 seconds")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        await self._server.start()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._server.stop()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(15)
        self._thread = None

    @property
    def url(self) -> str:
        return self._server.url

    def write_kubeconfig(self, path: str | Path, token: str = DEFAULT_TOKEN) -> None:
        """A kubeconfig with cluster, user and context "loom-local": plain HTTP, a bearer token.

        The token is not checked; it names the client in ``audit`` (write one kubeconfig per
        client whose requests should be told apart).
        """
        write_kubeconfig(self.url, path, token)

    def __enter__(self) -> "EmbeddedApiServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
