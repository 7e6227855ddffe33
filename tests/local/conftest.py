"""Fixtures for the embedded API server tests: one server per module, clients on it."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import kubernetes
import pytest

from loom.local.apiserver import EmbeddedApiServer


class Http:
    """Plain HTTP against the server (to see the wire shapes, not the client's models)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, method: str, path: str, body: Any = None,
                 content_type: str = "application/json", raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stream(self, path: str) -> list[dict[str, Any]]:
        """Read a watch stream to its end (use timeoutSeconds) as a list of events."""
        with urllib.request.urlopen(self.url + path, timeout=15) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory):
    server = EmbeddedApiServer()
    server.start()
    server.kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"  # type: ignore[attr-defined]
    server.write_kubeconfig(server.kubeconfig)  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(apiserver: EmbeddedApiServer) -> Http:
    return Http(apiserver.url)


@pytest.fixture(scope="module")
def k8s(apiserver: EmbeddedApiServer) -> kubernetes.client.ApiClient:
    client = kubernetes.config.new_client_from_config(config_file=str(apiserver.kubeconfig))  # type: ignore[attr-defined]
    yield client
    client.close()


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.loom.dev"},
    "spec": {
        "group": "test.loom.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList",
                  "shortNames": ["wd"], "categories": ["loomtest"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                                         {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "default": 3},
                            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                            "ratio": {"type": "number", "maximum": 1},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "split": {
                                "type": "object",
                                "properties": {"train": {"type": "number", "minimum": 0, "maximum": 1},
                                               "test": {"type": "number", "minimum": 0, "maximum": 1}},
                                "x-kubernetes-validations": [
                                    {"rule": "self.train + self.test == 1.0", "message": "fractions must sum to 1"}],
                            },
                            "owner": {"type": "string",
                                      "x-kubernetes-validations": [
                                          {"rule": "self == oldSelf", "message": "owner is immutable"}]},
                        },
                    },
                    "status": {
                        "type": "object",
                        "properties": {"phase": {"type": "string"}, "observedGeneration": {"type": "integer"}},
                    },
                },
            }},
        }],
    },
}


@pytest.fixture(scope="module")
def widgets(http: Http) -> str:
    """Install the Widget CRD; answers the base path of widgets in the default namespace."""
    status, body = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    assert status == 201, body
    return "/apis/test.loom.dev/v1/namespaces/default/widgets"
