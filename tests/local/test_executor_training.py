"""The local PyTorchJob controller's parts TrainingRun relies on: the ExitCode restart
policy (signals retry the gang, trainer errors fail it and stop the others) and the local
stand-in for Kueue (a LocalQueue admits, Hold holds, HoldAndDrain preempts)."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from loom.local.cluster import EmbeddedCluster
from loom.local.executor.kube import PODS, PYTORCHJOBS, Kube
from loom.local.executor.pytorchjobs import LOCALQUEUES, retryable_exit

NS = "exec-train"
LOCALQUEUE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "localqueues.kueue.x-k8s.io"},
    "spec": {"group": "kueue.x-k8s.io", "scope": "Namespaced",
             "names": {"plural": "localqueues", "singular": "localqueue", "kind": "LocalQueue", "listKind": "LocalQueueList"},
             "versions": [{"name": "v1beta1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory):
    embedded = EmbeddedCluster(tmp_path_factory.mktemp("exec-train"), interval=0.2).start()
    k = Kube(str(embedded.kubeconfig))
    k._call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    k._call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=LOCALQUEUE_CRD)
    yield k
    k.close()
    embedded.stop()


def wait(fn: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def is_true(obj: dict | None, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions") or [])


def ptj(name: str, master: list[str], worker: list[str], labels: dict | None = None, **run_policy: Any) -> dict:
    def rs(cmd: list[str]) -> dict:
        return {"replicas": 1, "restartPolicy": "ExitCode",
                "template": {"spec": {"containers": [{"name": "pytorch", "image": "x", "command": cmd}]}}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"pytorchReplicaSpecs": {"Master": rs(master), "Worker": rs(worker)}, "runPolicy": run_policy}}


def test_retryable_exit_codes():
    assert retryable_exit(-9) and retryable_exit(137) and retryable_exit(143)
    assert not retryable_exit(1) and not retryable_exit(2) and not retryable_exit(0) and not retryable_exit(None)


def test_exit_code_policy_retries_a_kill_but_not_an_error(kube: Kube, tmp_path: Path):
    name = f"sig-{uuid.uuid4().hex[:6]}"
    starts = tmp_path / "starts"
    # the worker kills itself (SIGKILL: retryable) on its first start, then succeeds
    worker = ["python", "-c", f"import os, signal, time; p={str(starts)!r}; n=len(open(p).read()) if os.path.exists(p) else 0; "
              f"open(p, 'a').write('w'); time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL) if n == 0 else None"]
    master = ["python", "-c", "import time; time.sleep(1.5)"]
    kube.create(PYTORCHJOBS, NS, ptj(name, master, worker, backoffLimit=3))
    done = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and (is_true(j, "Succeeded") or is_true(j, "Failed")) and j,
                60, "the job to finish")
    assert is_true(done, "Succeeded"), done["status"]
    assert starts.read_text() == "ww"  # one gang restart

    name = f"err-{uuid.uuid4().hex[:6]}"
    pidfile = tmp_path / "master.pid"
    master = ["python", "-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
    worker = ["python", "-c", "import time, sys; time.sleep(0.5); sys.exit(1)"]
    kube.create(PYTORCHJOBS, NS, ptj(name, master, worker, backoffLimit=3))
    failed = wait(lambda: (j := kube.get(PYTORCHJOBS, NS, name)) and is_true(j, "Failed") and j, 30, "Failed")
    msg = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["message"]
    assert "1 Worker replica(s) failed" in msg  # not retried: exit 1 is permanent
    master_pod = kube.get(PODS, NS, f"{name}-master-0")
    assert master_pod["status"]["phase"] == "Failed"  # the other replica was stopped


def test_local_kueue_admits_holds_and_preempts(kube: Kube, tmp_path: Path):
    name = f"q-{uuid.uuid4().hex[:6]}"
    starts = tmp_path / "starts"
    cmd = ["python", "-c", f"import time; open({str(starts)!r}, 'a').write('x'); time.sleep(60)"]
    kube.create(LOCALQUEUES, NS, {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
                                  "metadata": {"name": "lq", "namespace": NS}, "spec": {"stopPolicy": "Hold"}})
    kube.create(PYTORCHJOBS, NS, ptj(name, cmd, cmd, labels={"kueue.x-k8s.io/queue-name": "lq"}, suspend=True))
    wait(lambda: is_true(kube.get(PYTORCHJOBS, NS, name), "Suspended"), what="Suspended")
    time.sleep(1)
    assert kube.get(PYTORCHJOBS, NS, name)["spec"]["runPolicy"]["suspend"] is True and not starts.exists()
    kube.patch(LOCALQUEUES, NS, "lq", {"spec": {"stopPolicy": "None"}})  # admitted
    wait(lambda: is_true(kube.get(PYTORCHJOBS, NS, name), "Running"), what="Running")
    assert kube.get(PYTORCHJOBS, NS, name)["spec"]["runPolicy"]["suspend"] is False
    kube.patch(LOCALQUEUES, NS, "lq", {"spec": {"stopPolicy": "HoldAndDrain"}})  # preempted
    wait(lambda: is_true(kube.get(PYTORCHJOBS, NS, name), "Suspended"), what="suspended again")
    assert kube.get(PYTORCHJOBS, NS, name)["spec"]["runPolicy"]["suspend"] is True
    kube.patch(LOCALQUEUES, NS, "lq", {"spec": {"stopPolicy": "None"}})
    wait(lambda: is_true(kube.get(PYTORCHJOBS, NS, name), "Running"), what="running again")
    wait(lambda: starts.exists() and starts.read_text() == "xxxx", 20, "the gang started twice")
    kube.delete(PYTORCHJOBS, NS, name)
