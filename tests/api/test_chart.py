"""The Helm chart, checked without helm: metadata, CRDs, RBAC, the operator's pod.

Templates are read after a crude strip of Go-template syntax (lines that are
only a template action are dropped, inline actions become a placeholder). That
is enough for the plain-YAML parts checked here (RBAC rules, env, probes); it
is no substitute for `helm template` / `helm lint` where helm is available.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from loom.api import RBAC_NEEDS, RbacNeed
from loom.backends import storage
from loom.backends.inferenceservice import RUNTIME
from loom.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loom"
PLACEHOLDER = "TEMPLATED"


VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
#: ``{{ if .Values.a.b }}A{{ else }}B{{ end }}`` inside a line: decided from the values.
INLINE_IF = re.compile(
    r"\{\{-?\s*if\s+\$?\.Values\.([\w.]+)\s*-?\}\}(.*?)"
    r"(?:\{\{-?\s*else\s*-?\}\}(.*?))?\{\{-?\s*end\s*-?\}\}"
)


def _value(values: dict, path: str):
    node = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def strip_template(text: str, values: dict | None = None) -> str:
    values = VALUES if values is None else values
    text = text.replace('{{ "{{.Name}}" }}', "{{.Name}}".replace("{", "<").replace("}", ">"))
    out = []
    for line in text.splitlines():
        if re.fullmatch(r"\s*(\{\{.*?\}\}\s*)+", line):
            continue
        line = INLINE_IF.sub(
            lambda m: m.group(2) if _value(values, m.group(1)) else (m.group(3) or ""), line
        )
        assert not re.search(r"\{\{-?\s*(if|else|end|range|with)\b", line), (
            f"inline control action this crude stripper cannot decide: {line.strip()}"
        )
        out.append(re.sub(r"\{\{.*?\}\}", PLACEHOLDER, line))
    return "\n".join(out) + "\n"


def template_docs(name: str, values: dict | None = None) -> list[dict]:
    text = strip_template((CHART / "templates" / name).read_text(), values)
    return [d for d in yaml.safe_load_all(text) if d]


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "loom"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"]


def test_values() -> None:
    """The chart's defaults are the operator's own (loom.config.Settings, Storage)."""
    values = VALUES
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    defaults = Settings()
    assert values["operator"]["image"]["repository"]
    assert values["workload"]["image"]["repository"]
    assert f"{values['workload']['image']['repository']}:{chart['appVersion']}" == defaults.workload_image
    assert values["s3"]["bucket"] == defaults.bucket == storage.DEFAULT_BUCKET
    assert values["s3"]["region"] == storage.DEFAULT_REGION
    assert values["s3"]["tenantSecretName"] == defaults.s3_secret
    assert values["operator"]["reconcileInterval"] == defaults.reconcile_interval
    assert "name" not in values["servingRuntime"]  # fixed: the operator names it (RUNTIME)
    assert "replicas" not in values["operator"]  # fixed at 1: kopf runs standalone
    assert values["minio"]["enabled"] is False


def test_every_template_parses_after_stripping() -> None:
    kinds = {}
    for path in sorted((CHART / "templates").glob("*.yaml")):
        docs = template_docs(path.name)
        for doc in docs:
            assert "apiVersion" in doc and "kind" in doc, path.name
            assert PLACEHOLDER not in doc["kind"], (path.name, doc["kind"])
        kinds[path.name] = [d["kind"] for d in docs]
    assert kinds == {
        "deployment.yaml": ["Deployment"],
        "minio.yaml": ["Secret", "PersistentVolumeClaim", "Deployment", "Service"],
        "rbac.yaml": ["ClusterRole", "ClusterRoleBinding"],
        "secret.yaml": ["Secret"],
        "serviceaccount.yaml": ["ServiceAccount"],
        "servingruntime.yaml": ["ServingRuntime"],
    }


def missing_verbs(rules: list[dict], need: RbacNeed) -> set[str]:
    """The verbs of ``need`` that a list of RBAC PolicyRules does NOT grant."""
    missing = set(need.verbs)
    for rule in rules:
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        verbs = rule.get("verbs") or []
        if rule.get("resourceNames"):
            continue
        if need.group not in groups and "*" not in groups:
            continue
        if need.resource not in resources and "*" not in resources:
            continue
        if "*" in verbs:
            return set()
        missing -= set(verbs)
    return missing


def cluster_role_rules() -> list[dict]:
    docs = template_docs("rbac.yaml")
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert binding["subjects"][0]["kind"] == "ServiceAccount"
    return role["rules"]


def test_rbac_covers_every_need() -> None:
    rules = cluster_role_rules()
    for need in RBAC_NEEDS:
        assert not missing_verbs(rules, need), (
            f"ClusterRole lacks {sorted(missing_verbs(rules, need))} on "
            f"{need.group or 'core'}/{need.resource} ({need.why})"
        )


def test_rbac_grants_nothing_beyond_the_needs() -> None:
    needed = {(n.group, n.resource, v) for n in RBAC_NEEDS for v in n.verbs}
    granted = set()
    for rule in cluster_role_rules():
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, resource, verb) in needed, (group, resource, verb)
                    granted.add((group, resource, verb))
    assert granted == needed
    resources = {resource for rule in cluster_role_rules() for resource in rule["resources"]}
    assert not resources & {"secrets", "serviceaccounts", "namespaces"}


class RecordingEnv(Mapping):
    """An environment that records every variable read from it."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key, default=None):
        self.read.add(key)
        return self.values.get(key, default)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return key in self.values

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def operator_env_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The variables the operator's settings and storage read from its environment."""
    env = RecordingEnv({"LOOM_S3_ENDPOINT": "http://s3.invalid:9000"})
    with monkeypatch.context() as m:  # Settings.from_env reads os.environ
        m.setattr(os, "environ", env)
        Settings.from_env()
    storage.Storage.from_env(env)  # (the S3 client's own reads are not the chart's concern)
    return env.read


def operator_module_env_reads() -> set[str]:
    """Variables loom.operator reads itself (os.environ.get("NAME", ...) / os.environ["NAME"])."""
    source = Path(importlib.util.find_spec("loom.operator").origin).read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target, args = node.func.value, node.args
        elif isinstance(node, ast.Subscript):
            target, args = node.value, [node.slice]
        if target is not None and ast.unparse(target) == "os.environ" and args:
            if isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                names.add(args[0].value)
    return names


def test_operator_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    [deployment] = template_docs("deployment.yaml")
    assert deployment["spec"]["replicas"] == 1  # kopf runs standalone: never two
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "-m", "loom.operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    reads = operator_env_reads(monkeypatch)
    credentials = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert credentials <= reads  # from the Secret, by envFrom; never in env
    assert {"LOOM_S3_ENDPOINT", "LOOM_S3_BUCKET", "LOOM_S3_SECRET", "LOOM_WORKLOAD_IMAGE"} <= reads
    # Everything the operator's settings and storage read is set, except the keys...
    assert reads - credentials <= set(env), sorted(reads - credentials - set(env))
    # ...and everything set is read by someone.
    read_anywhere = reads | operator_module_env_reads()
    assert set(env) <= read_anywhere, sorted(set(env) - read_anywhere)
    assert not credentials & set(env)
    assert env["LOOM_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert "secretRef" in container["envFrom"][0]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {"name": "health", "containerPort": 8080} in container["ports"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not any("AWS_SECRET_ACCESS_KEY" == e["name"] for e in container["env"])


def test_serving_runtime() -> None:
    [runtime] = template_docs("servingruntime.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ServingRuntime"
    cluster_scoped = {**VALUES, "servingRuntime": {**VALUES["servingRuntime"], "clusterScoped": True}}
    [cluster_runtime] = template_docs("servingruntime.yaml", cluster_scoped)
    assert cluster_runtime["kind"] == "ClusterServingRuntime"
    assert runtime["metadata"]["name"] == RUNTIME  # what every InferenceService names
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v1", "v2"]
    assert spec["supportedModelFormats"][0]["name"] == "onnx"
    [container] = spec["containers"]
    assert container["command"] == ["python", "-m", "loom.workloads.serve"]
    assert container["args"] == [
        "--model_name=<<.Name>>",
        "--model_dir=/mnt/models",
        "--http_port=8080",
    ]
    text = (CHART / "templates" / "servingruntime.yaml").read_text()
    assert '--model_name={{ "{{.Name}}" }}' in text  # rendered by helm as {{.Name}} for KServe


def test_minio_is_optional() -> None:
    text = (CHART / "templates" / "minio.yaml").read_text()
    assert text.startswith("{{- if .Values.minio.enabled }}")
    kinds = {d["kind"] for d in template_docs("minio.yaml")}
    assert {"Deployment", "Service"} <= kinds
