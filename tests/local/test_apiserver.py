"""The embedded API server behaves like kube-apiserver where Loom, kopf and kubectl can tell."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from typing import Any, Callable

import kubernetes
import pytest
from kubernetes.client import ApiException, CoreV1Api, CustomObjectsApi

CM = "/api/v1/namespaces/default/configmaps"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


# --- identity, versions, kinds ------------------------------------------------------------------

def test_create_sets_identity_from_url_and_generate_name(k8s, http):
    core = CoreV1Api(k8s)
    created = core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}, "data": {"a": "1"}})
    meta = created.metadata
    assert meta.name.startswith("gen-") and len(meta.name) == len("gen-") + 5
    assert meta.namespace == "default"  # from the URL: the body had none
    assert len(meta.uid) == 36 and meta.creation_timestamp is not None
    status, body = http("GET", f"{CM}/{meta.name}")
    assert status == 200 and body["kind"] == "ConfigMap" and body["apiVersion"] == "v1"
    assert body["metadata"]["generation"] == 1


def test_create_rejects_mismatched_namespace_and_missing_name(http):
    status, body = http("POST", CM, {"metadata": {"name": "x", "namespace": "other"}})
    assert status == 400 and body["kind"] == "Status"
    status, body = http("POST", CM, {"metadata": {}})
    assert status == 422 and body["reason"] == "Invalid" and "metadata.name" in body["message"]
    status, body = http("POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}})
    assert status == 404 and body["message"] == 'namespaces "nowhere" not found'


def test_resource_versions_are_global_and_monotonic(k8s, http):
    core = CoreV1Api(k8s)
    a = core.create_namespaced_config_map("default", {"metadata": {"name": "rv-a"}})
    b = core.create_namespaced_secret("default", {"metadata": {"name": "rv-b"}})
    c = core.patch_namespaced_config_map("rv-a", "default", {"data": {"k": "v"}})
    versions = [int(a.metadata.resource_version), int(b.metadata.resource_version), int(c.metadata.resource_version)]
    assert versions == sorted(set(versions))  # strictly increasing, across resource types
    listed = core.list_namespaced_config_map("default")
    assert int(listed.metadata.resource_version) >= versions[-1]
    assert a.metadata.uid == c.metadata.uid


def test_list_kinds_and_discovery_shapes(http, widgets):
    status, body = http("GET", "/api/v1/namespaces/default/pods")
    assert (status, body["kind"], body["apiVersion"]) == (200, "PodList", "v1")
    status, body = http("GET", widgets)
    assert (body["kind"], body["apiVersion"]) == ("WidgetList", "test.loom.dev/v1")
    status, body = http("GET", "/apis/batch/v1/jobs")  # all namespaces
    assert body["kind"] == "JobList" and "resourceVersion" in body["metadata"]
    _, api = http("GET", "/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, v1 = http("GET", "/api/v1")
    assert v1["groupVersion"] == "v1"
    names = {r["name"]: r for r in v1["resources"]}
    assert names["namespaces"]["namespaced"] is False and names["pods"]["namespaced"] is True
    assert "pods/status" in names
    _, groups = http("GET", "/apis")
    group_names = {g["name"] for g in groups["groups"]}
    assert {"batch", "kubeflow.org", "serving.kserve.io", "coordination.k8s.io", "events.k8s.io",
            "apiextensions.k8s.io", "test.loom.dev"} <= group_names
    _, kserve = http("GET", "/apis/serving.kserve.io/v1beta1")
    isvc = {r["name"]: r for r in kserve["resources"]}
    assert isvc["inferenceservices"]["shortNames"] == ["isvc"] and "inferenceservices/status" in isvc
    _, version = http("GET", "/version")
    assert version["major"] == "1"
    _, openapi_doc = http("GET", "/openapi/v3/api/v1")
    assert version["gitVersion"] == openapi_doc["info"]["version"] == f"v1.{version['minor']}.0"  # one version


def test_errors_are_status_objects(http):
    status, body = http("GET", f"{CM}/does-not-exist")
    assert status == 404
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["message"] == 'configmaps "does-not-exist" not found'
    status, body = http("GET", "/apis/nothing.example/v1/things")
    assert status == 404 and body["reason"] == "NotFound"


def test_bad_client_input_is_400_not_500(http):
    http("POST", CM, {"metadata": {"name": "bad-input"}})

    def bad_request(status: int, body: Any) -> str:
        assert (status, body["kind"], body["reason"], body["code"]) == (400, "Status", "BadRequest", 400), body
        return body["message"]

    message = bad_request(*http("GET", f"{CM}?fieldSelector=metadata.name"))
    assert message == "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
    bad_request(*http("GET", f"{CM}?watch=true&fieldSelector=metadata.name"))
    bad_request(*http("DELETE", f"{CM}?fieldSelector=nonsense"))
    message = bad_request(*http("GET", f"{CM}?watch=true&timeoutSeconds=abc"))
    assert "timeoutSeconds" in message
    bad_request(*http("GET", f"{CM}?watch=true&timeoutSeconds=-1"))
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata: null\n"
    bad_request(*http("PATCH", f"{CM}/applied-null?fieldManager=test", raw=doc,
                      content_type="application/apply-patch+yaml"))  # would be created
    bad_request(*http("PATCH", f"{CM}/bad-input?fieldManager=test", raw=doc,
                      content_type="application/apply-patch+yaml"))  # exists
    bad_request(*http("DELETE", f"{CM}/bad-input", ["not", "an", "object"]))
    bad_request(*http("DELETE", f"{CM}/bad-input", "propagationPolicy"))
    bad_request(*http("DELETE", f"{CM}/bad-input", {"preconditions": "uid"}))
    assert http("GET", f"{CM}/bad-input")[0] == 200 and http("GET", f"{CM}/applied-null")[0] == 404
    assert http("DELETE", f"{CM}/bad-input", {"preconditions": {}})[0] == 200


# --- writes: conflicts, patches, generation, status -------------------------------------------

def test_duplicate_create_and_stale_update_conflict(k8s):
    core = CoreV1Api(k8s)
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "conflicted"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("default", {"metadata": {"name": "conflicted"}})
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"
    core.patch_namespaced_config_map("conflicted", "default", {"data": {"a": "2"}})
    stale = {"metadata": {"name": "conflicted", "resourceVersion": first.metadata.resource_version}, "data": {"a": "3"}}
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("conflicted", "default", stale)
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as exc:  # a merge patch carrying a stale resourceVersion, too
        core.patch_namespaced_config_map("conflicted", "default", stale)
    assert exc.value.status == 409
    assert core.read_namespaced_config_map("conflicted", "default").data == {"a": "2"}


def test_patch_content_types(http):
    http("POST", CM, {"metadata": {"name": "patched"}, "data": {"a": "1", "b": "2"}})
    status, body = http("PATCH", f"{CM}/patched", [{"op": "test", "path": "/data/a", "value": "nope"},
                                                   {"op": "replace", "path": "/data/a", "value": "9"}],
                        "application/json-patch+json")
    assert status == 422 and body["reason"] == "Invalid"  # not 500: kopf relies on this
    status, body = http("PATCH", f"{CM}/patched", [{"op": "test", "path": "/data/a", "value": "1"},
                                                   {"op": "replace", "path": "/data/a", "value": "9"}],
                        "application/json-patch+json")
    assert status == 200 and body["data"] == {"a": "9", "b": "2"}
    status, body = http("PATCH", f"{CM}/patched", {"data": {"b": None, "c": "3"}}, "application/merge-patch+json")
    assert body["data"] == {"a": "9", "c": "3"}  # null deletes
    status, body = http("PATCH", f"{CM}/patched", {"data": {"d": "4"}}, "application/strategic-merge-patch+json")
    assert body["data"] == {"a": "9", "c": "3", "d": "4"}
    status, body = http("PUT", f"{CM}/patched", {"metadata": {"name": "patched"}, "data": {"z": "0"}})
    assert status == 200 and body["data"] == {"z": "0"}  # PUT replaces


def test_json_patch_errors_are_422_and_leave_the_object_alone(http):
    _, before = http("POST", CM, {"metadata": {"name": "jp"}, "data": {"a": "1"}, "binaryData": {}})
    for ops in ([{"op": "remove", "path": "/data/missing"}],  # JsonPatchConflict
                [{"op": "add", "path": "/data/a/b", "value": "x"}],  # JsonPointerException
                [{"op": "add", "path": "no-slash", "value": "x"}],
                [{"op": "frobnicate", "path": "/data/a"}],  # InvalidJsonPatch
                [{"op": "test", "path": "/data/missing", "value": "1"}],  # JsonPatchTestFailed
                {"op": "add", "path": "/data/b", "value": "2"}):  # not a list
        status, body = http("PATCH", f"{CM}/jp", ops, "application/json-patch+json")
        assert (status, body["reason"], body["code"]) == (422, "Invalid", 422), (ops, body)
    _, after = http("GET", f"{CM}/jp")
    assert after["data"] == {"a": "1"} and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    status, body = http("PATCH", f"{CM}/jp", [{"op": "add", "path": "/data/b", "value": "2"},
                                              {"op": "move", "from": "/data/a", "path": "/data/c"},
                                              {"op": "copy", "from": "/data/b", "path": "/data/d"}],
                        "application/json-patch+json")
    assert status == 200 and body["data"] == {"b": "2", "c": "1", "d": "2"}


def test_merge_patch_keeps_dollar_keys(http):
    http("POST", CM, {"metadata": {"name": "dollars"}, "data": {"a": "1"}})
    status, body = http("PATCH", f"{CM}/dollars", {"data": {"$patch": "delete", "$x": "y"}}, "application/merge-patch+json")
    assert status == 200 and body["data"] == {"a": "1", "$patch": "delete", "$x": "y"}  # plain keys, not directives


def test_strategic_merge_patch_directives(http):
    base = "/api/v1/namespaces/default/services"
    smp = "application/strategic-merge-patch+json"
    http("POST", base, {"metadata": {"name": "smp", "labels": {"a": "1", "b": "2"}, "finalizers": ["x/one", "x/two"]},
                        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}})
    refused = {
        "$patch": {"spec": {"ports": [{"name": "http", "$patch": "delete"}]}},
        "$deleteFromPrimitiveList/finalizers": {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x/one"]}},
        "$setElementOrder/ports": {"spec": {"$setElementOrder/ports": [{"name": "https"}, {"name": "http"}],
                                            "ports": [{"name": "http", "port": 8080}]}},
    }
    for directive, patch in refused.items():
        status, body = http("PATCH", f"{base}/smp", patch, smp)
        assert (status, body["reason"]) == (422, "Invalid"), body
        assert body["message"].startswith(f"strategic merge patch directive {directive}")
        assert body["message"].endswith("is not supported")
    _, svc = http("GET", f"{base}/smp")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80}, {"name": "https", "port": 443}]  # untouched
    assert svc["metadata"]["finalizers"] == ["x/one", "x/two"]
    # The map directives are served: replace, delete, retainKeys.
    status, svc = http("PATCH", f"{base}/smp", {"metadata": {"labels": {"$patch": "replace", "c": "3"}}}, smp)
    assert status == 200 and svc["metadata"]["labels"] == {"c": "3"}
    status, svc = http("PATCH", f"{base}/smp", {"metadata": {"labels": {"d": "4", "$retainKeys": ["d"]}}}, smp)
    assert status == 200 and svc["metadata"]["labels"] == {"d": "4"}
    status, svc = http("PATCH", f"{base}/smp", {"metadata": {"labels": {"$patch": "delete"}}}, smp)
    assert status == 200 and "labels" not in svc["metadata"]
    status, svc = http("PATCH", f"{base}/smp", {"spec": {"ports": [{"name": "only", "port": 1}]}}, smp)
    assert status == 200 and svc["spec"]["ports"] == [{"name": "only", "port": 1}]  # a list without directives replaces


def test_server_side_apply_creates_then_merges(http):
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n"
    status, body = http("PATCH", f"{CM}/applied?fieldManager=test", raw=doc, content_type="application/apply-patch+yaml")
    assert status == 201 and body["data"] == {"a": "1"} and body["metadata"]["namespace"] == "default"
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  b: '2'\n"
    status, body = http("PATCH", f"{CM}/applied?fieldManager=test", raw=doc, content_type="application/apply-patch+yaml")
    assert status == 200 and body["data"] == {"a": "1", "b": "2"}


def test_generation_bumps_only_on_spec_changes(http, widgets):
    status, w = http("POST", widgets, {"apiVersion": "test.loom.dev/v1", "kind": "Widget",
                                       "metadata": {"name": "gen"}, "spec": {"size": 2}})
    assert status == 201 and w["metadata"]["generation"] == 1
    _, w = http("PATCH", f"{widgets}/gen", {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json")
    assert w["metadata"]["generation"] == 1
    _, w = http("PATCH", f"{widgets}/gen/status", {"status": {"phase": "Ready"}}, "application/merge-patch+json")
    assert w["metadata"]["generation"] == 1
    _, w = http("PATCH", f"{widgets}/gen", {"spec": {"size": 5}}, "application/merge-patch+json")
    assert w["metadata"]["generation"] == 2
    rv = w["metadata"]["resourceVersion"]
    _, w = http("PATCH", f"{widgets}/gen", {"spec": {"size": 5}}, "application/merge-patch+json")
    assert w["metadata"]["generation"] == 2 and w["metadata"]["resourceVersion"] == rv  # a no-op


def test_status_subresource_is_separate(k8s, widgets):
    api = CustomObjectsApi(k8s)
    body = {"apiVersion": "test.loom.dev/v1", "kind": "Widget", "metadata": {"name": "st"},
            "spec": {"size": 1}, "status": {"phase": "Bogus"}}
    created = api.create_namespaced_custom_object("test.loom.dev", "v1", "default", "widgets", body)
    assert "status" not in created  # status is not taken on create
    api.patch_namespaced_custom_object_status("test.loom.dev", "v1", "default", "widgets", "st",
                                              {"status": {"phase": "Ready"}, "spec": {"size": 9}})
    obj = api.get_namespaced_custom_object("test.loom.dev", "v1", "default", "widgets", "st")
    assert obj["status"] == {"phase": "Ready"} and obj["spec"]["size"] == 1  # /status changed only status
    api.patch_namespaced_custom_object("test.loom.dev", "v1", "default", "widgets", "st",
                                       {"status": {"phase": "Hacked"}, "spec": {"size": 4}})
    obj = api.get_namespaced_custom_object("test.loom.dev", "v1", "default", "widgets", "st")
    assert obj["status"] == {"phase": "Ready"} and obj["spec"]["size"] == 4  # the main resource ignores status


def test_configmaps_have_no_status_subresource(http):
    assert http("POST", CM, {"metadata": {"name": "no-status"}, "data": {"a": "1"}})[0] == 201
    status, body = http("PATCH", f"{CM}/no-status/status", {"status": {"x": "y"}}, "application/merge-patch+json")
    assert (status, body["reason"]) == (404, "NotFound")
    assert body["message"] == "the server could not find the requested resource"  # the resource, not the object
    assert http("GET", f"{CM}/no-status/status")[0] == 404
    _, cm = http("GET", f"{CM}/no-status")
    assert "status" not in cm and cm["data"] == {"a": "1"}


# --- watching -------------------------------------------------------------------------------------

def test_watch_from_a_version_streams_only_later_events(http):
    http("POST", "/api/v1/namespaces", {"metadata": {"name": "watched"}})
    base = "/api/v1/namespaces/watched/configmaps"
    http("POST", base, {"metadata": {"name": "before"}})
    _, listed = http("GET", base)
    since = listed["metadata"]["resourceVersion"]
    http("POST", base, {"metadata": {"name": "after"}})
    http("PATCH", f"{base}/after", {"data": {"x": "1"}}, "application/merge-patch+json")
    http("DELETE", f"{base}/before")
    started = time.monotonic()
    events = http.stream(f"{base}?watch=true&resourceVersion={since}&timeoutSeconds=1")
    assert time.monotonic() - started >= 0.9  # the stream stayed open until timeoutSeconds
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]
    assert all(int(e["object"]["metadata"]["resourceVersion"]) > int(since) for e in events)
    assert events[0]["object"]["kind"] == "ConfigMap"
    # Without a version: the current state as ADDED.
    events = http.stream(f"{base}?watch=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after")]


def test_watch_streams_live_events_to_the_kubernetes_client(k8s):
    core = CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": "live"}})
    version = core.list_namespaced_config_map("live").metadata.resource_version
    core.create_namespaced_config_map("live", {"metadata": {"name": "one", "labels": {"app": "x"}}})
    core.create_namespaced_config_map("live", {"metadata": {"name": "two", "labels": {"app": "y"}}})
    watch = kubernetes.watch.Watch()
    seen = [(e["type"], e["object"].metadata.name)
            for e in watch.stream(core.list_namespaced_config_map, "live", resource_version=version,
                                  label_selector="app=x", timeout_seconds=1)]
    assert seen == [("ADDED", "one")]


def test_label_and_field_selectors(http):
    http("POST", "/api/v1/namespaces", {"metadata": {"name": "selectors"}})
    base = "/api/v1/namespaces/selectors/configmaps"
    http("POST", base, {"metadata": {"name": "a", "labels": {"tier": "web", "env": "prod"}}})
    http("POST", base, {"metadata": {"name": "b", "labels": {"tier": "db"}}})
    http("POST", base, {"metadata": {"name": "c"}})

    def names(query: str) -> list[str]:
        return [i["metadata"]["name"] for i in http("GET", f"{base}?{query}")[1]["items"]]

    assert names("labelSelector=tier%3Dweb,env") == ["a"]
    assert names("labelSelector=tier") == ["a", "b"]
    assert names("labelSelector=!tier") == ["c"]
    assert names("labelSelector=tier%20in%20(db,cache)") == ["b"]
    assert names("labelSelector=tier!%3Dweb") == ["b", "c"]
    assert names("fieldSelector=metadata.name%3Db") == ["b"]
    assert names("fieldSelector=metadata.name!%3Db") == ["a", "c"]


# --- CRDs -----------------------------------------------------------------------------------------

def test_crd_registration_discovery_and_removal(http):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.dev"},
           "spec": {"group": "example.dev", "scope": "Cluster",
                    "names": {"plural": "gadgets", "kind": "Gadget", "shortNames": ["gd"], "categories": ["all"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    assert http("GET", "/apis/example.dev/v1/gadgets")[0] == 404
    status, created = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    conditions = {c["type"]: c["status"] for c in created["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    assert created["status"]["acceptedNames"]["kind"] == "Gadget"
    _, resources = http("GET", "/apis/example.dev/v1")
    (gadgets,) = resources["resources"]
    assert gadgets == {"name": "gadgets", "singularName": "gadget", "namespaced": False, "kind": "Gadget",
                       "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                       "shortNames": ["gd"], "categories": ["all"]}
    status, obj = http("POST", "/apis/example.dev/v1/gadgets", {"metadata": {"name": "g1"}, "anything": 1})
    assert status == 201 and "namespace" not in obj["metadata"] and obj["anything"] == 1
    assert http("GET", "/apis/example.dev/v1/gadgets")[1]["kind"] == "GadgetList"
    status, _ = http("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.dev")
    assert status == 200
    assert http("GET", "/apis/example.dev/v1/gadgets")[0] == 404
    assert "example.dev" not in {g["name"] for g in http("GET", "/apis")[1]["groups"]}


def test_crd_name_must_match_its_names(http):
    crd = {"metadata": {"name": "wrong.example.dev"},
           "spec": {"group": "example.dev", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    status, body = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 422 and "metadata.name" in body["message"]


# --- deletion ---------------------------------------------------------------------------------------

def test_finalizers_hold_the_deletion_until_removed(http):
    http("POST", CM, {"metadata": {"name": "held", "finalizers": ["loom.dev/cleanup"]}})
    status, body = http("DELETE", f"{CM}/held")
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["deletionGracePeriodSeconds"] == 0
    status, body = http("GET", f"{CM}/held")
    assert status == 200 and body["metadata"]["deletionTimestamp"]  # still there
    status, body = http("PATCH", f"{CM}/held", {"metadata": {"finalizers": ["loom.dev/cleanup", "x/y"]}},
                        "application/merge-patch+json")
    assert status == 422  # no new finalizers on an object being deleted
    status, _ = http("PATCH", f"{CM}/held", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert status == 200
    assert http("GET", f"{CM}/held")[0] == 404


def test_owner_references_cascade_recursively(http):
    _, owner = http("POST", CM, {"metadata": {"name": "owner"}})
    ref = lambda obj, kind: {"apiVersion": "v1", "kind": kind, "name": obj["metadata"]["name"],  # noqa: E731
                             "uid": obj["metadata"]["uid"]}
    _, child = http("POST", "/api/v1/namespaces/default/secrets",
                    {"metadata": {"name": "child", "ownerReferences": [ref(owner, "ConfigMap")]}})
    _, grandchild = http("POST", "/api/v1/namespaces/default/pods",
                         {"metadata": {"name": "grandchild", "ownerReferences": [ref(child, "Secret")]}})
    _, other = http("POST", CM, {"metadata": {"name": "other-owner"}})
    http("POST", "/api/v1/namespaces/default/services",
         {"metadata": {"name": "shared", "ownerReferences": [ref(owner, "ConfigMap"), ref(other, "ConfigMap")]}})
    http("POST", "/api/v1/namespaces/default/services", {"metadata": {"name": "unrelated"}})
    status, _ = http("DELETE", f"{CM}/owner", {"propagationPolicy": "Background"})
    assert status == 200
    assert http("GET", "/api/v1/namespaces/default/secrets/child")[0] == 404
    assert http("GET", "/api/v1/namespaces/default/pods/grandchild")[0] == 404
    assert http("GET", "/api/v1/namespaces/default/services/shared")[0] == 200  # another owner lives
    assert http("GET", "/api/v1/namespaces/default/services/unrelated")[0] == 200


def test_store_indexes_uids_and_dependents():
    from loom.local.store import Store

    store = Store()
    key, pods = ("", "configmaps"), ("", "pods")
    owner = store.put(key, {"metadata": {"name": "o", "namespace": "n", "uid": "u-o"}}, "ADDED")
    ref = {"uid": "u-o", "kind": "ConfigMap", "name": "o"}
    store.put(pods, {"metadata": {"name": "p", "namespace": "n", "uid": "u-p", "ownerReferences": [ref]}}, "ADDED")
    store.put(pods, {"metadata": {"name": "bad", "namespace": "n", "uid": "u-b", "ownerReferences": "junk"}}, "ADDED")
    assert store.uid_exists("u-o") and store.uid_exists("u-p") and not store.uid_exists(None)
    assert [(k, o["metadata"]["name"]) for k, o in store.dependents_of("u-o")] == [(pods, "p")]
    # An update that drops the reference drops it from the index; removal drops the uid.
    store.put(pods, {"metadata": {"name": "p", "namespace": "n", "uid": "u-p"}}, "MODIFIED")
    assert store.dependents_of("u-o") == [] and "u-o" not in store.dependents
    store.remove(key, owner)
    assert not store.uid_exists("u-o") and store.uid_exists("u-p")
    store.unregister(pods)
    assert store.by_uid == {} and store.dependents == {}


def test_cascade_over_many_objects_is_quick(http):
    http("POST", "/api/v1/namespaces", {"metadata": {"name": "many"}})
    base = "/api/v1/namespaces/many/configmaps"
    _, root = http("POST", base, {"metadata": {"name": "root"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "root", "uid": root["metadata"]["uid"]}
    for i in range(300):
        http("POST", base, {"metadata": {"name": f"child-{i}", "ownerReferences": [ref]}})
    started = time.monotonic()
    assert http("DELETE", f"{base}/root")[0] == 200
    assert time.monotonic() - started < 2
    assert http("GET", base)[1]["items"] == []
    assert http("DELETE", "/api/v1/namespaces/many")[0] == 200


def test_namespace_deletion_deletes_its_objects(http):
    http("POST", "/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    http("POST", "/api/v1/namespaces/doomed/configmaps", {"metadata": {"name": "a"}})
    http("POST", "/api/v1/namespaces/doomed/configmaps", {"metadata": {"name": "b", "finalizers": ["x/y"]}})
    status, _ = http("DELETE", "/api/v1/namespaces/doomed")
    assert status == 200
    assert http("GET", "/api/v1/namespaces/doomed/configmaps/a")[0] == 404
    _, ns = http("GET", "/api/v1/namespaces/doomed")
    assert ns["status"]["phase"] == "Terminating"  # waits for the finalizer of b
    http("PATCH", "/api/v1/namespaces/doomed/configmaps/b", {"metadata": {"finalizers": []}},
         "application/merge-patch+json")
    assert http("GET", "/api/v1/namespaces/doomed")[0] == 404


def test_no_new_objects_in_a_terminating_namespace(http):
    http("POST", "/api/v1/namespaces", {"metadata": {"name": "closing"}})
    base = "/api/v1/namespaces/closing/configmaps"
    http("POST", base, {"metadata": {"name": "held", "finalizers": ["x/y"]}})
    assert http("DELETE", "/api/v1/namespaces/closing")[0] == 200
    status, body = http("POST", base, {"metadata": {"name": "late"}})
    assert status == 403 and body["reason"] == "Forbidden" and body["code"] == 403
    assert body["message"] == ('configmaps "late" is forbidden: unable to create new content in namespace closing '
                               "because it is being terminated")
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied-late\n"
    status, body = http("PATCH", f"{base}/applied-late?fieldManager=test", raw=doc,
                        content_type="application/apply-patch+yaml")
    assert status == 403 and "because it is being terminated" in body["message"]  # server-side apply, too
    assert [i["metadata"]["name"] for i in http("GET", base)[1]["items"]] == ["held"]
    # The last finalizer going still completes the namespace's deletion.
    http("PATCH", f"{base}/held", {"metadata": {"finalizers": []}}, "application/merge-patch+json")
    assert http("GET", "/api/v1/namespaces/closing")[0] == 404


# --- audit ----------------------------------------------------------------------------------------

def test_audit_records_user_verb_and_resource_per_request(apiserver, http, tmp_path):
    other = tmp_path / "other-kubeconfig"
    apiserver.write_kubeconfig(other, token="second-client")
    client = kubernetes.config.new_client_from_config(config_file=str(other))
    try:
        before = len(apiserver.audit)
        core = CoreV1Api(client)
        core.create_namespaced_config_map("default", {"metadata": {"name": "audited"}})
        core.read_namespaced_config_map("audited", "default")
        core.patch_namespaced_config_map("audited", "default", {"data": {"a": "1"}})
        core.replace_namespaced_config_map("audited", "default", {"metadata": {"name": "audited"}})
        core.list_namespaced_config_map("default")
        core.read_namespace("default")
        core.delete_namespaced_config_map("audited", "default")
        core.delete_collection_namespaced_config_map("default", label_selector="audited=yes")
        http.stream(f"{CM}?watch=true&timeoutSeconds=1")
        http("PATCH", "/apis/batch/v1/namespaces/default/jobs/nothing/status", {"status": {}},
             "application/merge-patch+json")
        http("GET", "/api/v1")  # discovery is not a request to a resource: not recorded
    finally:
        client.close()
    entries = [dict(e) for e in list(apiserver.audit)[before:]]  # read from the test's thread
    cm = {"group": "", "version": "v1", "resource": "configmaps", "subresource": "", "namespace": "default"}
    assert entries == [
        {"user": "second-client", "verb": "create", **cm},
        {"user": "second-client", "verb": "get", **cm},
        {"user": "second-client", "verb": "patch", **cm},
        {"user": "second-client", "verb": "update", **cm},
        {"user": "second-client", "verb": "list", **cm},
        {"user": "second-client", "verb": "get", **cm, "resource": "namespaces", "namespace": ""},
        {"user": "second-client", "verb": "delete", **cm},
        {"user": "second-client", "verb": "deletecollection", **cm},
        {"user": "", "verb": "watch", **cm},
        {"user": "", "verb": "patch", "group": "batch", "version": "v1", "resource": "jobs",
         "subresource": "status", "namespace": "default"},
    ]
    # The default kubeconfig still carries the default token.
    core = CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(apiserver.kubeconfig)))
    core.list_namespace()
    assert apiserver.audit[-1] == {"user": "loom-local-token", "verb": "list", "group": "", "version": "v1",
                                   "resource": "namespaces", "subresource": "", "namespace": ""}
    core.api_client.close()


def test_audit_is_bounded(apiserver, http, monkeypatch):
    from loom.local import apiserver as module

    monkeypatch.setattr(module, "AUDIT_LIMIT", len(apiserver.audit) + 5)
    for _ in range(12):
        http("GET", CM)
    assert len(apiserver.audit) <= module.AUDIT_LIMIT
    assert apiserver.audit[-1]["verb"] == "list"


# --- real clients ------------------------------------------------------------------------------------

KOPF_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfprobes.test.loom.dev"},
    "spec": {"group": "test.loom.dev", "scope": "Namespaced",
             "names": {"plural": "kopfprobes", "singular": "kopfprobe", "kind": "KopfProbe"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {"message": {"type": "string"}}},
                               "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}

OPERATOR = textwrap.dedent('''
    import kopf

    @kopf.on.startup()
    def configure(settings, **_):
        settings.watching.server_timeout = 5
        settings.persistence.finalizer = "test.loom.dev/kopf"

    @kopf.on.create("test.loom.dev", "v1", "kopfprobes")
    def created(spec, patch, **_):
        patch.status["echo"] = spec.get("message", "").upper()
        patch.status["phase"] = "Ready"

    @kopf.on.update("test.loom.dev", "v1", "kopfprobes", field="spec.message")
    def updated(new, patch, **_):
        patch.status["echo"] = (new or "").upper()

    @kopf.on.delete("test.loom.dev", "v1", "kopfprobes")
    def deleted(logger, **_):
        logger.info("cleaned up")  # a deletion handler makes kopf hold a finalizer
''')


def test_a_real_kopf_operator_reconciles_against_it(apiserver, http, tmp_path):
    assert http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", KOPF_CRD)[0] == 201
    (tmp_path / "operator.py").write_text(OPERATOR)
    env = dict(os.environ, KUBECONFIG=str(apiserver.kubeconfig))
    log = open(tmp_path / "kopf.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", "default",
                             str(tmp_path / "operator.py")], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = "/apis/test.loom.dev/v1/namespaces/default/kopfprobes"
    try:
        status, _ = http("POST", base, {"metadata": {"name": "p1"}, "spec": {"message": "hello"}})
        assert status == 201

        def status_of(value: str) -> bool:
            obj = http("GET", f"{base}/p1")[1]
            return obj.get("status", {}).get("echo") == value
        try:
            wait_for(lambda: status_of("HELLO"), timeout=30)
            http("PATCH", f"{base}/p1", {"spec": {"message": "again"}}, "application/merge-patch+json")
            wait_for(lambda: status_of("AGAIN"), timeout=30)
        except AssertionError:
            raise AssertionError((tmp_path / "kopf.log").read_text()[-4000:]) from None
        obj = http("GET", f"{base}/p1")[1]
        assert "test.loom.dev/kopf" in obj["metadata"].get("finalizers", [])
        # Deleting: kopf releases its finalizer and the object goes away.
        http("DELETE", f"{base}/p1")
        wait_for(lambda: http("GET", f"{base}/p1")[0] == 404, timeout=30)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


KUBECTL = shutil.which("kubectl")


def kubectl(apiserver, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBECONFIG=str(apiserver.kubeconfig))
    return subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (apt-get install kubectl)")
def test_kubectl_apply_get_describe_explain_delete(apiserver, widgets):
    manifest = textwrap.dedent('''
        apiVersion: test.loom.dev/v1
        kind: Widget
        metadata: {name: from-kubectl}
        spec: {size: 7}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: from-kubectl}
        data: {a: "1"}
    ''')
    result = kubectl(apiserver, "apply", "-f", "-", stdin=manifest)
    assert result.returncode == 0, result.stderr
    assert "widget.test.loom.dev/from-kubectl created" in result.stdout
    result = kubectl(apiserver, "apply", "-f", "-", stdin=manifest.replace("size: 7", "size: 8"))
    assert "widget.test.loom.dev/from-kubectl configured" in result.stdout
    assert "configmap/from-kubectl unchanged" in result.stdout

    result = kubectl(apiserver, "get", "loomtest")  # by category, with the CRD's printer columns
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert any(row.split()[:2] == ["from-kubectl", "8"] for row in rows)

    result = kubectl(apiserver, "get", "wd", "from-kubectl", "-o", "json")
    assert json.loads(result.stdout)["metadata"]["generation"] == 2

    result = kubectl(apiserver, "describe", "widget", "from-kubectl")
    assert result.returncode == 0, result.stderr
    assert "Name:         from-kubectl" in result.stdout and "Size:  8" in result.stdout

    result = kubectl(apiserver, "explain", "widgets.spec")
    assert result.returncode == 0, result.stderr
    assert "size" in result.stdout and "mode" in result.stdout

    bad = manifest.split("---")[0].replace("size: 7", "size: 0")
    result = kubectl(apiserver, "apply", "-f", "-", stdin=bad)
    assert result.returncode != 0
    assert "spec.size in body should be greater than or equal to 1" in result.stderr

    result = kubectl(apiserver, "delete", "widget", "from-kubectl")
    assert result.returncode == 0, result.stderr
    result = kubectl(apiserver, "get", "widgets", "from-kubectl")
    assert result.returncode != 0 and "NotFound" in result.stderr
