"""The manifests Loom builds for other controllers are what their own model classes accept."""
from __future__ import annotations

import json

from kubernetes.client import ApiClient

from loom.backends.inferenceservice import inference_service, isvc_state, served_model
from loom.backends.jobs import job_outcome, workload_job
from loom.backends.pytorchjob import Topology, pytorch_job, pytorchjob_outcome
from loom.config import Settings

OWNER = {"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment", "name": "iris", "uid": "u-1", "controller": True}
D = "sha256:" + "c" * 64


class _Response:
    def __init__(self, obj):
        self.data = json.dumps(obj)


def _roundtrip(obj, cls_name, client):
    """Deserialize with the library's own ApiClient, then serialize back: nothing may be lost."""
    model = client.deserialize(_Response(obj), cls_name)
    return client.sanitize_for_serialization(model)


def test_inference_service_matches_kserve_models():
    # Built again with kserve's own classes: the same field names, nothing extra, nothing missing.
    import kserve
    from kubernetes import client as k8s

    isvc = inference_service(name="iris", namespace="q", model_uri="s3://loom/q/m.onnx", model_digest=D,
                             service_account="loom-s3", owner=OWNER, labels={"a": "b"}, canary_percent=20)
    expected = kserve.V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=k8s.V1ObjectMeta(
            name="iris", namespace="q", labels={"a": "b"}, annotations={"loom.dev/model-digest": D},
            owner_references=[k8s.V1OwnerReference(api_version=OWNER["apiVersion"], kind=OWNER["kind"],
                                                   name=OWNER["name"], uid=OWNER["uid"], controller=True)],
        ),
        spec=kserve.V1beta1InferenceServiceSpec(
            predictor=kserve.V1beta1PredictorSpec(
                service_account_name="loom-s3",
                canary_traffic_percent=20,
                model=kserve.V1beta1ModelSpec(
                    model_format=kserve.V1beta1ModelFormat(name="onnx"),
                    runtime="loom-onnx",
                    protocol_version="v2",
                    storage_uri="s3://loom/q/m.onnx",
                    env=[k8s.V1EnvVar(name="LOOM_MODEL_DIGEST", value=D)],
                ),
            )
        ),
    )
    built = ApiClient().sanitize_for_serialization(expected)
    assert built["spec"]["predictor"]["model"].pop("name") == ""  # kserve's default container name
    assert built == isvc
    assert served_model(isvc) == ("s3://loom/q/m.onnx", D)


def test_pytorchjob_matches_kubeflow_models():
    from kubeflow.training.api_client import ApiClient as KFApiClient

    job = pytorch_job(name="r-g1", namespace="q", task={"k": 1}, owner=OWNER, labels={}, settings=Settings(),
                      topology=Topology(workers=2, nproc_per_node=1, cpu="1", memory="1Gi", gpus=1))
    back = _roundtrip(job, "KubeflowOrgV1PyTorchJob", KFApiClient())
    assert back == job
    container = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "loom-s3"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(job)  # keys by reference, never by value


def test_job_outcomes_follow_controller_conditions():
    job = workload_job(name="j", namespace="q", step="ingest", task={}, owner=OWNER, labels={}, settings=Settings())
    assert job_outcome(None) == "absent" and job_outcome(job) == "running"
    job["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    assert job_outcome(job) == "failed"
    assert pytorchjob_outcome({"status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}})[0] == "running"


def test_isvc_state_reads_a_failed_load():
    isvc = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}],
            "modelStatus": {"transitionStatus": "BlockedByFailedLoad", "lastFailureInfo": {"message": "digest mismatch"}}}}
    assert isvc_state(isvc)["failure"] == "digest mismatch"
