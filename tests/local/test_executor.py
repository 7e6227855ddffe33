"""The local executor against the real embedded API server and S3: Jobs, PyTorchJobs
and InferenceServices run as local processes, status written as the real controllers do."""
from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from loom.local.cluster import EmbeddedCluster
from loom.local.executor import Executor
from loom.local.executor.kube import (CONFIGMAPS, INFERENCESERVICES, JOBS, PODS, PYTORCHJOBS, SECRETS,
                                      SERVICEACCOUNTS, Kube)

NS = "exec-test"


# -- fixtures -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    embedded = EmbeddedCluster(tmp_path_factory.mktemp("executor"), interval=0.2, ready_timeout=30).start()
    kube = Kube(str(embedded.kubeconfig))
    kube._call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": NS}})
    state = {"kube": kube, "ex": embedded.executor, "s3": embedded.s3, "work": embedded.workdir}
    yield state
    embedded.executor = state["ex"]  # a test may have replaced the executor
    kube.close()
    embedded.stop()


@pytest.fixture
def kube(cluster) -> Kube:
    return cluster["kube"]


def wait(fn: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def cond(obj: dict | None, type_: str) -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def is_true(obj: dict | None, type_: str) -> bool:
    c = cond(obj, type_)
    return bool(c and c.get("status") == "True")


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def job(name: str, code: str, backoff: int = 0, **spec: Any) -> dict:
    container = {"name": "main", "image": "loom-workload:local", "command": ["python", "-c", code]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"backoffLimit": backoff, **spec,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}


# -- Jobs -----------------------------------------------------------------------
def test_job_runs_and_completes(kube: Kube, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    name = uniq("ok")
    kube.create(JOBS, NS, job(name, f"open({str(out)!r}, 'w').write('done'); print('hello from the pod')"))
    done = wait(lambda: (j := kube.get(JOBS, NS, name)) and is_true(j, "Complete") and j, what="Complete")
    st = done["status"]
    assert out.read_text() == "done"
    assert st["succeeded"] == 1 and "failed" not in st and "active" not in st
    assert st["startTime"] and st["completionTime"]
    pods = [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["name"].startswith(name + "-") and len(pod["metadata"]["name"]) == len(name) + 6
    assert pod["metadata"]["labels"]["controller-uid"] == done["metadata"]["uid"]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    log = Path(pod["metadata"]["annotations"]["loom.dev/local-log"]).read_text()
    assert "hello from the pod" in log


def test_job_fails_after_backoff_limit(kube: Kube) -> None:
    name = uniq("fail")
    kube.create(JOBS, NS, job(name, "import sys; print('boom', file=sys.stderr); sys.exit(1)", backoff=2))
    failed = wait(lambda: (j := kube.get(JOBS, NS, name)) and is_true(j, "Failed") and j, what="Failed")
    c = cond(failed, "Failed")
    assert c["reason"] == "BackoffLimitExceeded"
    assert c["message"] == "Job has reached the specified backoff limit"
    assert failed["status"]["failed"] == 3  # the first try and backoffLimit retries
    assert not is_true(failed, "Complete")
    pods = [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name]
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)
    assert {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods} == {1}


def test_job_env_and_envfrom_resolved(kube: Kube) -> None:
    name = uniq("env")
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    kube.create(SECRETS, NS, {"metadata": {"name": f"{name}-s3"}, "type": "Opaque",
                              "data": {"AWS_ACCESS_KEY_ID": b64("AKID"), "AWS_SECRET_ACCESS_KEY": b64("s3cr3t=/+")}})
    kube.create(CONFIGMAPS, NS, {"metadata": {"name": f"{name}-cm"}, "data": {"mode": "fast", "LEVEL": "3"}})
    code = ("import os; e = os.environ; "
            "assert e['AWS_ACCESS_KEY_ID'] == 'AKID', e.get('AWS_ACCESS_KEY_ID'); "
            "assert e['AWS_SECRET_ACCESS_KEY'] == 's3cr3t=/+'; "
            "assert e['CM_LEVEL'] == '3' and e['CM_mode'] == 'fast'; "
            "assert e['KEY'] == 'AKID' and e['MODE'] == 'fast'; "
            "assert e['GREETING'] == 'hello AKID'; "
            "assert e['POD_NAME'] == e['HOSTNAME'] and e['POD_NAMESPACE'] == " + repr(NS) + "; "
            "assert e['OVERRIDE'] == 'env wins'")
    body = job(name, code, container={
        "envFrom": [{"secretRef": {"name": f"{name}-s3"}},
                    {"configMapRef": {"name": f"{name}-cm"}, "prefix": "CM_"},
                    {"secretRef": {"name": "no-such-secret", "optional": True}}],
        "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": f"{name}-s3", "key": "AWS_ACCESS_KEY_ID"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": f"{name}-cm", "key": "mode"}}},
                {"name": "GREETING", "value": "hello $(KEY)"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "CM_LEVEL", "value": "overridden"}, {"name": "CM_LEVEL", "value": "3"},
                {"name": "OVERRIDE", "value": "env wins"}]})
    kube.create(JOBS, NS, body)
    done = wait(lambda: (j := kube.get(JOBS, NS, name)) and (is_true(j, "Complete") or is_true(j, "Failed")) and j)
    if not is_true(done, "Complete"):
        pods = [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name]
        pytest.fail(Path(pods[0]["metadata"]["annotations"]["loom.dev/local-log"]).read_text())


def test_job_missing_secret_waits_then_runs(kube: Kube) -> None:
    name = uniq("wait")
    kube.create(JOBS, NS, job(name, "import os; assert os.environ['X'] == 'late'",
                              container={"envFrom": [{"secretRef": {"name": f"{name}-later"}}]}))

    def waiting():
        pods = [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name]
        st = pods and pods[0]["status"]["containerStatuses"][0]["state"].get("waiting")
        return st and st.get("reason") == "CreateContainerConfigError" and st

    w = wait(waiting, what="CreateContainerConfigError")
    assert f'"{name}-later" not found' in w["message"]
    kube.create(SECRETS, NS, {"metadata": {"name": f"{name}-later"}, "stringData": {"X": "late"}})
    wait(lambda: is_true(kube.get(JOBS, NS, name), "Complete"), what="Complete")


def test_job_active_deadline_kills(kube: Kube, tmp_path: Path) -> None:
    name = uniq("deadline")
    pidfile = tmp_path / "pid"
    kube.create(JOBS, NS, job(name, f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                                    "time.sleep(60)", backoff=3, activeDeadlineSeconds=1))
    failed = wait(lambda: (j := kube.get(JOBS, NS, name)) and is_true(j, "Failed") and j, what="Failed")
    assert cond(failed, "Failed")["reason"] == "DeadlineExceeded"
    pid = int(wait(lambda: pidfile.exists() and pidfile.read_text()))
    wait(lambda: not pid_alive(pid), 5, "the process killed")


def test_job_deleted_kills_process(kube: Kube, tmp_path: Path) -> None:
    name = uniq("del")
    pidfile = tmp_path / "pid"
    kube.create(JOBS, NS, job(name, f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                                    "time.sleep(60)"))
    pid = int(wait(lambda: pidfile.exists() and pidfile.read_text(), what="the pod to start"))
    assert pid_alive(pid)
    wait(lambda: (kube.get(JOBS, NS, name) or {}).get("status", {}).get("active") == 1, what="active 1")
    kube.delete(JOBS, NS, name)
    wait(lambda: not pid_alive(pid), 10, "the process killed")
    wait(lambda: not [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name],
         what="the pods deleted")


def test_job_leftover_children_killed_when_main_process_exits(kube: Kube, tmp_path: Path) -> None:
    """A container ends with its main process: children left in its process group die too."""
    name = uniq("orphan")
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid))")
    kube.create(JOBS, NS, job(name, code))
    wait(lambda: is_true(kube.get(JOBS, NS, name), "Complete"), what="Complete")
    pid = int(wait(lambda: pidfile.exists() and pidfile.read_text(), what="the child pid"))
    wait(lambda: not pid_alive(pid), 10, "the leftover child killed")


def test_job_without_command_fails_with_message(kube: Kube) -> None:
    name = uniq("nocmd")
    body = job(name, "")
    del body["spec"]["template"]["spec"]["containers"][0]["command"]
    kube.create(JOBS, NS, body)
    wait(lambda: is_true(kube.get(JOBS, NS, name), "Failed"), what="Failed")
    pods = [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name]
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError" and "no command" in term["message"]


def test_job_unsupported_spec_is_invalid(kube: Kube) -> None:
    """What the local executor does not run (several completions, Indexed) fails the Job with InvalidSpec."""
    for spec, field in (({"completions": 3}, "spec.completions"), ({"completionMode": "Indexed"},
                                                                   "spec.completionMode")):
        name = uniq("unsup")
        kube.create(JOBS, NS, job(name, "pass", **spec))
        failed = wait(lambda: (j := kube.get(JOBS, NS, name)) and is_true(j, "Failed") and j, what="Failed")
        c = cond(failed, "Failed")
        assert c["reason"] == "InvalidSpec" and field in c["message"], c
        assert not [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == name]


def test_executor_restart_is_idempotent(cluster, kube: Kube, tmp_path: Path) -> None:
    """Processes die with the executor; a new one leaves finished Jobs alone and starts unfinished ones again."""
    done, running = uniq("before"), uniq("again")
    kube.create(JOBS, NS, job(done, "pass"))
    wait(lambda: is_true(kube.get(JOBS, NS, done), "Complete"), what="Complete")
    pidfile = tmp_path / "pid"
    kube.create(JOBS, NS, job(running, f"import os, time; open({str(pidfile)!r}, 'a').write(str(os.getpid()) + ' '); "
                                       "time.sleep(60)"))
    pid = int(wait(lambda: pidfile.exists() and pidfile.read_text()).split()[0])
    old: Executor = cluster["ex"]
    old.stop()
    assert not pid_alive(pid)
    new = Executor(str(cluster["work"] / "kubeconfig"), cluster["work"] / "executor", s3_env=cluster["s3"].env(),
                   interval=0.2, ready_timeout=30)
    cluster["ex"] = new
    new.start()
    pids = wait(lambda: len(pidfile.read_text().split()) == 2 and pidfile.read_text().split(), what="a new pod")
    assert pid_alive(int(pids[1]))
    pods = [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == running]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"  # the stale pod was replaced
    assert len([p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("job-name") == done]) == 1
    assert is_true(kube.get(JOBS, NS, done), "Complete")
    kube.delete(JOBS, NS, running)
    wait(lambda: not pid_alive(int(pids[1])), 10, "the process killed")


# -- PyTorchJobs ----------------------------------------------------------------
DDP = r"""
import os, sys, json
import torch, torch.distributed as dist
e = os.environ
assert e["MASTER_ADDR"] == "127.0.0.1", e["MASTER_ADDR"]
assert int(e["MASTER_PORT"]) > 0
assert e["WORLD_SIZE"] == "2", e["WORLD_SIZE"]
assert e["PYTHONUNBUFFERED"] == "1"
rank = int(e["RANK"])
dist.init_process_group("gloo", rank=rank, world_size=2, init_method="env://")
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
assert t.item() == 3.0, t
if rank == 0:
    open(sys.argv[1], "w").write(json.dumps({"sum": t.item(), "port": e["MASTER_PORT"]}))
dist.destroy_process_group()
"""


def ptj(name: str, master: list[str], worker: list[str] | None, workers: int = 1, policy: str = "Never",
        run_policy: dict | None = None) -> dict:
    def rs(cmd: list[str], n: int) -> dict:
        return {"replicas": n, "restartPolicy": policy,
                "template": {"spec": {"containers": [{"name": "pytorch", "image": "loom-workload:local",
                                                      "command": cmd}]}}}
    specs = {"Master": rs(master, 1)}
    if worker is not None:
        specs["Worker"] = rs(worker, workers)
    spec: dict = {"pytorchReplicaSpecs": specs}
    if run_policy:
        spec["runPolicy"] = run_policy
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def test_pytorchjob_ddp_gloo(kube: Kube, tmp_path: Path) -> None:
    name = uniq("ddp")
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    out = tmp_path / "result.json"
    cmd = ["python", str(script), str(out)]
    kube.create(PYTORCHJOBS, NS, ptj(name, cmd, cmd))
    done = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and (is_true(j, "Succeeded") or is_true(j, "Failed"))
                and j, 60, "Succeeded")
    if not is_true(done, "Succeeded"):
        logs = [Path(p["metadata"]["annotations"]["loom.dev/local-log"]).read_text() for p in kube.list(PODS, NS)
                if p["metadata"]["labels"].get("training.kubeflow.org/job-name") == name]
        pytest.fail(json.dumps(done["status"], indent=1) + "\n".join(logs))
    assert json.loads(out.read_text())["sum"] == 3.0
    st = done["status"]
    types = [c["type"] for c in st["conditions"]]
    assert types[0] == "Created" and "Succeeded" in types
    assert cond(done, "Running")["status"] == "False"
    assert cond(done, "Succeeded")["reason"] == "PyTorchJobSucceeded"
    assert st["replicaStatuses"]["Master"].get("succeeded") == 1
    assert st["startTime"] and st["completionTime"]
    pods = {p["metadata"]["name"]: p for p in kube.list(PODS, NS)
            if p["metadata"]["labels"].get("training.kubeflow.org/job-name") == name}
    assert set(pods) == {f"{name}-master-0", f"{name}-worker-0"}
    assert pods[f"{name}-master-0"]["metadata"]["labels"]["training.kubeflow.org/replica-type"] == "master"


def test_pytorchjob_failing_worker_fails_job_and_kills_master(kube: Kube, tmp_path: Path) -> None:
    name = uniq("ptjfail")
    pidfile = tmp_path / "master.pid"
    master = ["python", "-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
    worker = ["python", "-c", "import time, sys; time.sleep(0.5); sys.exit(2)"]
    kube.create(PYTORCHJOBS, NS, ptj(name, master, worker))
    pid = int(wait(lambda: pidfile.exists() and pidfile.read_text(), what="the master to start"))
    failed = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and is_true(j, "Failed") and j, what="Failed")
    c = cond(failed, "Failed")
    assert c["reason"] == "PyTorchJobFailed" and "1 Worker replica(s) failed" in c["message"]
    wait(lambda: not pid_alive(pid), 10, "the master killed")
    assert failed["status"]["replicaStatuses"]["Worker"]["failed"] == 1


def test_pytorchjob_restarts_gang_then_backoff_limit(kube: Kube, tmp_path: Path) -> None:
    name = uniq("ptjretry")
    starts = tmp_path / "starts"
    master = ["python", "-c", f"import time; open({str(starts)!r}, 'a').write('m'); time.sleep(60)"]
    worker = ["python", "-c", "import time, sys; time.sleep(0.3); sys.exit(1)"]
    kube.create(PYTORCHJOBS, NS, ptj(name, master, worker, policy="OnFailure", run_policy={"backoffLimit": 2}))
    failed = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and is_true(j, "Failed") and j, 30, "Failed")
    assert "backoff limit" in cond(failed, "Failed")["message"]
    assert starts.read_text() == "mmm"  # the first start and two gang restarts
    pod = kube.get(PODS, NS, f"{name}-worker-0")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 2


def test_pytorchjob_suspend_and_resume(kube: Kube, tmp_path: Path) -> None:
    name = uniq("ptjsusp")
    marker = tmp_path / "ran"
    cmd = ["python", "-c", f"open({str(marker)!r}, 'a').write('x')"]
    kube.create(PYTORCHJOBS, NS, ptj(name, cmd, None, run_policy={"suspend": True}))
    wait(lambda: is_true(kube.get(PYTORCHJOBS, NS, name), "Suspended"), what="Suspended")
    time.sleep(1.0)
    assert not marker.exists()
    assert not [p for p in kube.list(PODS, NS) if p["metadata"]["labels"].get("training.kubeflow.org/job-name") == name]
    kube.patch(PYTORCHJOBS, NS, name, {"spec": {"runPolicy": {"suspend": False}}})
    done = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and is_true(j, "Succeeded") and j, 20, "Succeeded")
    assert marker.read_text() == "x"
    assert cond(done, "Suspended")["status"] == "False"


def test_pytorchjob_malformed_is_failed_not_crashed(kube: Kube) -> None:
    name = uniq("ptjbad")
    kube.create(PYTORCHJOBS, NS, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                  "metadata": {"name": name, "namespace": NS},
                                  "spec": {"pytorchReplicaSpecs": {"Chief": {"replicas": 1}}}})
    failed = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and is_true(j, "Failed") and j, what="Failed")
    assert "unknown replica type" in cond(failed, "Failed")["message"]
    for spec, field in (({"nprocPerNode": "auto"}, "spec.nprocPerNode"),
                        ({"restartPolicy": "Always"}, "restartPolicy")):
        name = uniq("ptjunsup")
        body = ptj(name, ["python", "-c", "pass"], None)
        body["spec"].update({k: v for k, v in spec.items() if k == "nprocPerNode"})
        body["spec"]["pytorchReplicaSpecs"]["Master"].update({k: v for k, v in spec.items() if k != "nprocPerNode"})
        kube.create(PYTORCHJOBS, NS, body)
        failed = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and is_true(j, "Failed") and j, what="Failed")
        assert field in cond(failed, "Failed")["message"], cond(failed, "Failed")


# -- InferenceServices -------------------------------------------------------------
def onnx_model(bias: list[float]) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.RandomState(0).randn(4, 3).astype(np.float32), "W")
    b = numpy_helper.from_array(np.array(bias, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Softmax", ["z"], ["probabilities"], axis=1)],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"loom.classes": '["setosa", "versicolor", "virginica"]'})
    return model.SerializeToString()


@pytest.fixture(scope="module")
def models(cluster) -> dict[str, str]:
    """Two tiny ONNX models in S3, a ServiceAccount with the S3 Secret (KServe's way)."""
    import hashlib

    s3 = cluster["s3"]
    kube: Kube = cluster["kube"]
    from minio import Minio

    mc = Minio(s3.endpoint.split("://")[1], access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    out = {}
    for tag, bias in (("a", [0.0, 0.0, 0.0]), ("b", [0.0, 5.0, 0.0])):
        data = onnx_model(bias)
        mc.put_object(s3.bucket, f"{NS}/models/{tag}/model.onnx", io.BytesIO(data), len(data))
        out[tag] = f"s3://{s3.bucket}/{NS}/models/{tag}/model.onnx"
        out[tag + "_prefix"] = f"s3://{s3.bucket}/{NS}/models/{tag}/"
        out[tag + "_digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    kube.create(SECRETS, NS, {"metadata": {"name": "isvc-s3", "annotations": {
        "serving.kserve.io/s3-endpoint": s3.endpoint.split("://")[1], "serving.kserve.io/s3-usehttps": "0"}},
        "data": {"AWS_ACCESS_KEY_ID": b64(s3.access_key), "AWS_SECRET_ACCESS_KEY": b64(s3.secret_key)}})
    kube.create(SERVICEACCOUNTS, NS, {"metadata": {"name": "loom-s3"}, "secrets": [{"name": "isvc-s3"}]})
    return out


def isvc(name: str, uri: str, canary: int | None = None, env: list | None = None, sa: str | None = "loom-s3") -> dict:
    predictor: dict = {"model": {"modelFormat": {"name": "onnx"}, "storageUri": uri}}
    if env:
        predictor["model"]["env"] = env
    if sa:
        predictor["serviceAccountName"] = sa
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": NS}, "spec": {"predictor": predictor}}


def post(url: str, body: dict) -> tuple[int, dict, str | None]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers.get("X-Loom-Revision")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), e.headers.get("X-Loom-Revision")


def predictor_status(obj: dict | None) -> dict:
    return (((obj or {}).get("status") or {}).get("components") or {}).get("predictor") or {}


def test_inferenceservice_ready_and_predicts(kube: Kube, models: dict, cluster) -> None:
    name = uniq("iris")
    kube.create(INFERENCESERVICES, NS, isvc(name, models["a"], env=[
        {"name": "LOOM_MODEL_DIGEST", "value": models["a_digest"]}]))
    ready = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, name)) and is_true(o, "Ready") and o, 30, "Ready")
    st = ready["status"]
    url = st["url"]
    assert url.startswith("http://127.0.0.1:") and st["address"]["url"] == url
    for t in ("PredictorReady", "IngressReady", "LatestDeploymentReady"):
        assert is_true(ready, t), t
    p = predictor_status(ready)
    rev = f"{name}-predictor-00001"
    assert p["latestCreatedRevision"] == p["latestReadyRevision"] == p["latestRolledoutRevision"] == rev
    assert p["traffic"] == [{"revisionName": rev, "percent": 100, "latestRevision": True, "url": url}]
    assert st["modelStatus"]["transitionStatus"] == "UpToDate"
    assert st["modelStatus"]["states"]["activeModelState"] == "Loaded"

    code, body, served = post(f"{url}/v1/models/{name}:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]] * 2})
    assert code == 200, body
    assert served == rev and len(body["predictions"]) == 2
    code, body, _ = post(f"{url}/v2/models/{name}/infer", {"inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
    assert code == 200, body
    assert body["outputs"][0]["name"] == "probabilities" and body["outputs"][0]["shape"] == [1, 3]
    with urllib.request.urlopen(f"{url}/loom/metrics", timeout=5) as r:
        metrics = json.loads(r.read())
    assert metrics["revisions"][rev]["requests"] == 2 and metrics["revisions"][rev]["errors"] == 0
    assert cluster["ex"].metrics(NS, name)["revisions"][rev]["latencyMs"]["p50"] > 0

    # deleting the InferenceService stops the model server and the front door
    kube.delete(INFERENCESERVICES, NS, name)

    def gone() -> bool:
        try:
            urllib.request.urlopen(f"{url}/loom/metrics", timeout=1)
            return False
        except (urllib.error.URLError, ConnectionError):
            return True
    wait(gone, 10, "the proxy stopped")


def test_inferenceservice_canary_split_rollback_promote(kube: Kube, models: dict, cluster) -> None:
    name = uniq("canary")
    r1, r2 = f"{name}-predictor-00001", f"{name}-predictor-00002"
    kube.create(INFERENCESERVICES, NS, isvc(name, models["a"]))
    ready = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, name)) and is_true(o, "Ready") and o, 30, "Ready")
    url = ready["status"]["url"]

    # a new model with canaryTrafficPercent 30: the new revision takes 30%, the rolled-out one keeps 70%
    kube.patch(INFERENCESERVICES, NS, name, {"spec": {"predictor": {
        "canaryTrafficPercent": 30, "model": {"storageUri": models["b_prefix"]}}}})
    split = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, name)) and is_true(o, "Ready")
                 and predictor_status(o).get("latestReadyRevision") == r2 and o, 30, "canary ready")
    p = predictor_status(split)
    assert p["latestCreatedRevision"] == r2 and p["latestRolledoutRevision"] == r1
    assert [(t["revisionName"], t["percent"], t["latestRevision"]) for t in p["traffic"]] == \
        [(r2, 30, True), (r1, 70, False)]
    served = [post(f"{url}/v1/models/{name}:predict", {"instances": [[1, 2, 3, 4]]})[2] for _ in range(100)]
    n2 = served.count(r2)
    assert served.count(r1) + n2 == 100
    assert 12 <= n2 <= 50, n2  # 30% +- ~4 standard deviations
    metrics = cluster["ex"].metrics(NS, name)
    assert metrics["revisions"][r2]["requests"] == n2 and metrics["revisions"][r1]["requests"] == 100 - n2

    # canaryTrafficPercent 0: everything back on the rolled-out revision (rollback)
    kube.patch(INFERENCESERVICES, NS, name, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
    wait(lambda: [(t["revisionName"], t["percent"]) for t in predictor_status(kube.get(INFERENCESERVICES, NS, name))
                  .get("traffic", [])] == [(r2, 0), (r1, 100)], 10, "rollback traffic")
    served = {post(f"{url}/v1/models/{name}:predict", {"instances": [[1, 2, 3, 4]]})[2] for _ in range(30)}
    assert served == {r1}

    # no canaryTrafficPercent: the new revision is promoted, the old one stopped
    kube.patch(INFERENCESERVICES, NS, name, {"spec": {"predictor": {"canaryTrafficPercent": None}}})
    promoted = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, name)) and
                    predictor_status(o).get("latestRolledoutRevision") == r2 and o, 10, "promotion")
    p = predictor_status(promoted)
    assert p["previousRolledoutRevision"] == r1
    assert p["traffic"] == [{"revisionName": r2, "percent": 100, "latestRevision": True, "url": url}]
    served = {post(f"{url}/v1/models/{name}:predict", {"instances": [[1, 2, 3, 4]]})[2] for _ in range(20)}
    assert served == {r2}
    kube.delete(INFERENCESERVICES, NS, name)


def test_inferenceservice_digest_mismatch_never_ready(kube: Kube, models: dict) -> None:
    name = uniq("tampered")
    kube.create(INFERENCESERVICES, NS, isvc(name, models["a"], env=[
        {"name": "LOOM_MODEL_DIGEST", "value": models["b_digest"]}]))
    failed = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, name)) and cond(o, "Ready")
                  and cond(o, "Ready")["status"] == "False" and o, 30, "Ready False")
    c = cond(failed, "Ready")
    assert c["reason"] == "RevisionFailed" and "digest mismatch" in c["message"], c
    ms = failed["status"]["modelStatus"]
    assert ms["transitionStatus"] == "BlockedByFailedLoad"
    assert ms["lastFailureInfo"]["reason"] == "ModelLoadFailed" and ms["lastFailureInfo"]["exitCode"] == 1
    assert "url" not in failed["status"]
    time.sleep(0.5)
    assert not is_true(kube.get(INFERENCESERVICES, NS, name), "Ready")
    kube.delete(INFERENCESERVICES, NS, name)


def test_inferenceservice_missing_model_and_bad_format(kube: Kube, models: dict) -> None:
    name = uniq("nomodel")
    kube.create(INFERENCESERVICES, NS, isvc(name, models["a"].replace("/a/", "/nope/")))
    failed = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, name)) and cond(o, "Ready")
                  and cond(o, "Ready")["status"] == "False" and o, 20, "Ready False")
    info = failed["status"]["modelStatus"]["lastFailureInfo"]
    assert info["location"] == "storage-initializer" and "no objects found" in info["message"]
    bad = uniq("sklearn")
    body = isvc(bad, models["a"])
    body["spec"]["predictor"]["model"]["modelFormat"]["name"] = "sklearn"
    kube.create(INFERENCESERVICES, NS, body)
    failed = wait(lambda: (o := kube.get(INFERENCESERVICES, NS, bad)) and cond(o, "Ready")
                  and cond(o, "Ready")["status"] == "False" and o, 10, "Ready False")
    assert cond(failed, "Ready")["reason"] == "NoSupportingRuntime"
    assert failed["status"]["modelStatus"]["transitionStatus"] == "InvalidSpec"
