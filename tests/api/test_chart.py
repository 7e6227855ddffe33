"""The Helm chart, checked without helm: metadata, CRDs, RBAC, the operator's pod.

Templates are read after a crude strip of Go-template syntax (lines that are
only a template action are dropped, inline actions become a placeholder). That
is enough for the plain-YAML parts checked here (RBAC rules, env, probes); it
is no substitute for `helm template` / `helm lint` where helm is available.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from loom.api import KINDS, RBAC_NEEDS, missing_verbs
from loom.api import crdgen
from loom.backends.inferenceservice import RUNTIME

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loom"
PLACEHOLDER = "TEMPLATED"


def strip_template(text: str) -> str:
    text = text.replace('{{ "{{.Name}}" }}', "{{.Name}}".replace("{", "<").replace("}", ">"))
    out = []
    for line in text.splitlines():
        if re.fullmatch(r"\s*(\{\{.*?\}\}\s*)+", line):
            continue
        out.append(re.sub(r"\{\{.*?\}\}", PLACEHOLDER, line))
    return "\n".join(out) + "\n"


def template_docs(name: str) -> list[dict]:
    text = strip_template((CHART / "templates" / name).read_text())
    return [d for d in yaml.safe_load_all(text) if d]


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "loom"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"]


def test_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["image"]["repository"]
    assert values["workload"]["image"]["repository"]
    assert values["s3"]["bucket"] == "loom"
    assert values["s3"]["tenantSecretName"] == "loom-s3"
    assert "name" not in values["servingRuntime"]  # fixed: the operator names it (RUNTIME)
    assert values["minio"]["enabled"] is False


def test_chart_crds_equal_crds_dir() -> None:
    expected = {crdgen.filename(info) for info in KINDS.values()}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    top = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert set(chart) == set(top) == expected
    assert chart == top


def test_every_template_parses_after_stripping() -> None:
    for path in sorted((CHART / "templates").glob("*.yaml")):
        for doc in template_docs(path.name):
            assert "apiVersion" in doc and "kind" in doc, path.name


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


def test_operator_deployment() -> None:
    [deployment] = template_docs("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "-m", "loom.operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name in ("LOOM_S3_ENDPOINT", "LOOM_S3_BUCKET", "LOOM_WORKLOAD_IMAGE", "LOOM_S3_SECRET"):
        assert name in env
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
