"""TrainingRun's job manifests: the PyTorchJob (through kubeflow-training's own classes)
and the Trainer v2 TrainJob, from a spec as admission leaves it."""
from __future__ import annotations

import json

from loom.api import parse_spec
from loom.backends.pytorchjob import Topology, is_suspended, pytorch_job, pytorchjob_outcome
from loom.backends.trainjob import train_job, trainjob_outcome
from loom.config import Settings

S = Settings(bucket="loom", s3_endpoint="http://s3:9000", s3_secret="loom-s3", workload_image="reg/loom:1")
OWNER = {"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun", "name": "tr", "uid": "u-1", "controller": True,
         "blockOwnerDeletion": True}
TASK = {"outputPrefix": "s3://loom/ns/models/tr/", "resultUri": "s3://loom/ns/r.json"}
GPU_SPEC = {
    "labelJobRef": {"name": "lj"}, "workers": 3, "nprocPerNode": 4, "image": "reg/loom-cuda@sha256:" + "e" * 64,
    "imageHasCuda": True, "queue": "team-a", "priorityClassName": "high",
    "resources": {"cpu": "8", "memory": "64Gi", "gpus": 4, "gpuType": "NVIDIA-H100-80GB-HBM3", "shmSize": "16Gi"},
    "nodeSelector": {"pool": "train"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "runPolicy": {"backoffLimit": 5, "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 600, "cleanPodPolicy": "All"},
    "storageSecretRef": {"name": "team-a-s3"},
}


def topo(spec):
    return Topology.from_spec(parse_spec("TrainingRun", spec).model_dump(by_alias=True, mode="json", exclude_none=True))


def build(spec):
    return pytorch_job(name="tr-g1", namespace="ns", task=TASK, owner=OWNER, labels={"loom.dev/name": "tr"},
                       settings=S, topology=topo(spec))


class _Response:
    def __init__(self, obj):
        self.data = json.dumps(obj)


def test_gpu_topology_on_a_shared_cluster():
    job = build(GPU_SPEC)
    # the kubeflow-training classes read it back without losing anything
    from kubeflow.training.api_client import ApiClient as KFApiClient

    client = KFApiClient()
    model = client.deserialize(_Response(job), "KubeflowOrgV1PyTorchJob")
    assert client.sanitize_for_serialization(model) == job
    spec = job["spec"]
    assert spec["nprocPerNode"] == "4" and spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert spec["runPolicy"] == {
        "backoffLimit": 5, "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 600, "cleanPodPolicy": "All",
        "suspend": True, "schedulingPolicy": {"minAvailable": 4, "queue": "team-a", "priorityClass": "high"}}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    for rtype in ("Master", "Worker"):
        r = spec["pytorchReplicaSpecs"][rtype]
        assert r["restartPolicy"] == "ExitCode"
        pod = r["template"]["spec"]
        assert r["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        c = pod["containers"][0]
        assert c["name"] == "pytorch" and c["image"] == GPU_SPEC["image"]
        assert c["command"] == ["torchrun", "--module", "loom.workloads.train"]
        assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"}
        assert c["envFrom"] == [{"secretRef": {"name": "team-a-s3"}}]  # the tenant's Secret, by name
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
        assert pod["nodeSelector"] == {"pool": "train", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["priorityClassName"] == "high"
    assert is_suspended(job)


def test_cpu_defaults_no_queue_no_gpu_scheduling():
    job = build({"labelJobRef": {"name": "lj"}, "workers": 0})
    spec = job["spec"]
    assert list(spec["pytorchReplicaSpecs"]) == ["Master"]
    pod = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod and "volumes" not in pod
    c = pod["containers"][0]
    assert c["command"] == ["python", "-m", "loom.workloads.train"] and c["image"] == "reg/loom:1"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert c["envFrom"] == [{"secretRef": {"name": "loom-s3"}}]
    assert spec["runPolicy"]["suspend"] is False and spec["runPolicy"]["backoffLimit"] == 3
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert not is_suspended(job)
    # the S3 keys travel by reference only: no value of the operator's settings names them
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(job)


def test_outcomes():
    assert pytorchjob_outcome(None)[0] == "absent"
    susp = {"status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Suspended", "status": "True"}]}}
    assert pytorchjob_outcome(susp)[0] == "suspended"
    restarting = {"status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                                            {"type": "Restarting", "status": "True", "message": "1 Worker failed"}]}}
    assert pytorchjob_outcome(restarting) == ("restarting", "1 Worker failed")
    assert trainjob_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] == "succeeded"
    assert trainjob_outcome({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}})[0] == "suspended"
    assert trainjob_outcome({"status": {"jobsStatus": [{"name": "node", "active": 2}]}})[0] == "running"


def test_trainjob_v2_manifest():
    job = train_job(name="tr-g1", namespace="ns", task=TASK, owner=OWNER, labels={"loom.dev/name": "tr"},
                    settings=S, topology=topo({**GPU_SPEC, "backend": "trainjob"}))
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"}
    t = spec["trainer"]
    assert (t["numNodes"], t["numProcPerNode"]) == (4, 4)
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    keys = [e for e in t["env"] if e["name"].startswith("AWS_")]
    assert keys == [{"name": k, "valueFrom": {"secretKeyRef": {"name": "team-a-s3", "key": k}}}
                    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    assert spec["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    o = spec["podSpecOverrides"][0]
    assert o["targetJobs"] == [{"name": "node"}]
    assert o["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert o["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
