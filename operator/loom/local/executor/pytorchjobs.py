"""The kubeflow.org/v1 PyTorchJob controller (Kubeflow training operator), locally.

One process per replica (Master 0, Workers 1..N), with the env the training
operator injects; a gang: a failing replica stops the others, a restart restarts
them all. Status: conditions Created/Running/Restarting/Succeeded/Failed/Suspended
(with the operator's reasons and messages), replicaStatuses, start/completion time.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from loom.reconcile.common import get_condition

from ..s3 import free_port
from .controller import RunController
from .kube import PYTORCHJOBS, Kube, Obj, Resource, finished_as, now, status_diff
from .pods import LocalPod, SpecError, as_int, owner_ref

log = logging.getLogger("loom.local.executor")

KIND = "PyTorchJob"
LABEL_JOB = "training.kubeflow.org/job-name"
SUCCESS_GRACE_S = 5.0  # workers still running after the master succeeded get this long to exit
# Kueue, played locally: a suspended job labelled with a LocalQueue that exists is admitted
# (unsuspended); a LocalQueue with spec.stopPolicy Hold admits nothing new, HoldAndDrain also
# suspends (preempts) admitted jobs. No quota accounting: that is the real Kueue's job.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LOCALQUEUES = Resource("kueue.x-k8s.io", "v1beta1", "localqueues", "LocalQueue")


def kueue_admission(kube: Kube, obj: Obj) -> bool | None:
    """What the local Kueue wants of ``spec.runPolicy.suspend``: False (admit), True (hold or
    drain), or None (not Kueue's job, or its LocalQueue is missing: left as it is)."""
    meta = obj.get("metadata") or {}
    queue = (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    if not queue:
        return None
    try:
        lq = kube.get(LOCALQUEUES, meta.get("namespace") or "default", queue)
    except Exception:  # noqa: BLE001 - no Kueue CRD: nobody admits the job, as in a real cluster
        return None
    if lq is None:
        return None
    stop = (lq.get("spec") or {}).get("stopPolicy") or "None"
    suspended = bool(((obj.get("spec") or {}).get("runPolicy") or {}).get("suspend"))
    if stop == "HoldAndDrain":
        return True
    if stop == "Hold":
        return True if suspended else None
    return False


def update_condition(conditions: list[Obj], type_: str, status: str, reason: str, message: str) -> list[Obj]:
    """kubeflow/common's UpdateJobConditions: Running and Restarting exclude each other,
    a terminal condition turns Running False; a changed condition moves to the end."""
    for c in conditions:
        if c.get("type") == type_ and c.get("status") == status and c.get("reason") == reason \
                and c.get("message") == message:
            return conditions
    ts = now()
    out = []
    for c in conditions:
        t = c.get("type")
        if (type_ == "Restarting" and t == "Running") or (type_ == "Running" and t == "Restarting") or t == type_:
            continue
        c = dict(c)
        if type_ in ("Failed", "Succeeded") and t == "Running" and c.get("status") != "False":
            c["status"] = "False"
            c["lastUpdateTime"] = ts
            c["lastTransitionTime"] = ts
        out.append(c)
    prev = get_condition(conditions, type_)
    transition = prev["lastTransitionTime"] if prev and prev.get("status") == status and \
        prev.get("lastTransitionTime") else ts
    out.append({"type": type_, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": ts, "lastTransitionTime": transition})
    return out


class ReplicaSpec:
    def __init__(self, rtype: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise SpecError(f"pytorchReplicaSpecs.{rtype} must be an object")
        self.rtype = rtype
        self.replicas = as_int(raw.get("replicas"), 1, f"pytorchReplicaSpecs.{rtype}.replicas")
        policy = raw.get("restartPolicy") or "OnFailure"
        if policy not in ("OnFailure", "Never", "ExitCode"):
            raise SpecError(f"pytorchReplicaSpecs.{rtype}.restartPolicy: {policy!r} is not supported by the "
                            "local executor (OnFailure, Never, ExitCode)")
        self.retryable = policy in ("OnFailure", "ExitCode")  # a failed replica restarts the gang
        # ExitCode: exit codes 1..127 are permanent, 128..255 (signals) retryable, as in the training operator.
        self.exit_code_policy = policy == "ExitCode"
        self.template = raw.get("template")
        if not isinstance(self.template, dict) or not (self.template.get("spec") or {}).get("containers"):
            raise SpecError(f"pytorchReplicaSpecs.{rtype}.template.spec.containers is required")


def parse(obj: Obj) -> tuple[dict[str, ReplicaSpec], Obj, int]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise SpecError("spec must be an object")
    raw = spec.get("pytorchReplicaSpecs")
    if not isinstance(raw, dict) or not raw:
        raise SpecError("spec.pytorchReplicaSpecs is required")
    replicas: dict[str, ReplicaSpec] = {}
    for key, value in raw.items():
        rtype = {"master": "Master", "worker": "Worker"}.get(str(key).lower())
        if rtype is None:
            raise SpecError(f"pytorchReplicaSpecs: unknown replica type {key!r} (Master, Worker)")
        replicas[rtype] = ReplicaSpec(rtype, value)
    if "Master" in replicas and replicas["Master"].replicas != 1:
        raise SpecError("pytorchReplicaSpecs.Master.replicas must be 1")
    run_policy = spec.get("runPolicy") or {}
    if not isinstance(run_policy, dict):
        raise SpecError("spec.runPolicy must be an object")
    nproc = as_int(spec.get("nprocPerNode"), 1, "spec.nprocPerNode", 1)  # the API types it a string
    return replicas, run_policy, nproc


def retryable_exit(code: int | None) -> bool:
    """Killed by a signal (a negative Popen code, or 128 + n as a container reports it)."""
    return code is not None and (code < 0 or code >= 128)


class PyTorchJobRun:
    def __init__(self, ctl: "PyTorchJobController", obj: Obj) -> None:
        self.ctl = ctl
        meta = obj.get("metadata") or {}
        self.namespace = meta.get("namespace") or "default"
        self.name = meta["name"]
        self.uid = meta.get("uid") or ""
        self.owner = owner_ref({**obj, "apiVersion": "kubeflow.org/v1", "kind": KIND})
        status = obj.get("status") or {}
        self.finished = finished_as(status, "Succeeded", "Failed")
        self.conditions: list[Obj] = list(status.get("conditions") or []) if self.finished else []
        self.replica_statuses: Obj = dict(status.get("replicaStatuses") or {}) if self.finished else {}
        self.start_time: str | None = status.get("startTime") if self.finished else None
        self.completion_time: str | None = status.get("completionTime") if self.finished else None
        self.start_mono: float | None = None
        self.success_mono: float | None = None
        self.pods: dict[tuple[str, int], LocalPod] = {}
        self.restarts = 0
        self.suspended = False
        self.port: int | None = None

    def _cond(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = update_condition(self.conditions, type_, status, reason, message)

    def kill_all(self, reason: str = "Killed", message: str | None = None) -> None:
        for p in self.pods.values():
            if not p.finished:
                p.kill(reason, message)

    # -- the gang --------------------------------------------------------------
    def start_gang(self, replicas: dict[str, ReplicaSpec], nproc: int) -> None:
        self.port = free_port()
        total = sum(r.replicas for r in replicas.values())
        has_master = "Master" in replicas
        old = self.pods
        self.pods = {}
        for rtype in ("Master", "Worker"):
            r = replicas.get(rtype)
            if r is None:
                continue
            for i in range(r.replicas):
                rank = i + 1 if (rtype == "Worker" and has_master) else i
                env = {
                    "PYTHONUNBUFFERED": "1",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(self.port),
                    "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(self.port),
                    "WORLD_SIZE": str(total * nproc), "RANK": str(rank),
                    "PET_NNODES": str(total), "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": str(nproc),
                }
                labels = {LABEL_JOB: self.name, "training.kubeflow.org/operator-name": "pytorchjob-controller",
                          "training.kubeflow.org/replica-type": rtype.lower(),
                          "training.kubeflow.org/replica-index": str(i)}
                if rank == 0:
                    labels["training.kubeflow.org/job-role"] = "master"
                name = f"{self.name}-{rtype.lower()}-{i}"
                pod = LocalPod(self.ctl.kube, self.ctl.workdir, self.namespace, name, r.template, labels,
                               self.owner, env, env_base=self.ctl.env_base)
                prev = old.get((rtype, i))
                if prev is not None:
                    pod.restart_count = prev.restart_count + 1
                self.pods[(rtype, i)] = pod
        for pod in self.pods.values():
            pod.start()

    def counts(self) -> Obj:
        out: Obj = {}
        for (rtype, _), p in self.pods.items():
            c = out.setdefault(rtype, {"active": 0, "succeeded": 0, "failed": 0})
            if p.phase in ("Pending", "Running"):
                c["active"] += 1
            elif p.phase == "Succeeded":
                c["succeeded"] += 1
            else:
                c["failed"] += 1
        for rtype, c in out.items():
            c["selector"] = f"{LABEL_JOB}={self.name},training.kubeflow.org/operator-name=pytorchjob-controller," \
                            f"training.kubeflow.org/replica-type={rtype.lower()}"
            for k in ("active", "succeeded", "failed"):
                if not c[k]:
                    del c[k]
        return out

    def fail(self, message: str) -> None:
        self.kill_all("Killed", message)
        self.finished = "Failed"
        self.completion_time = now()
        self.replica_statuses = self.counts()
        self._cond("Failed", "True", f"{KIND}Failed", message)
        self.ctl.kube.event(self.obj_ref(), f"{KIND}Failed", message, "Warning", component="pytorchjob-controller")

    def obj_ref(self) -> Obj:
        return {"apiVersion": "kubeflow.org/v1", "kind": KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}}

    # -- reconcile -------------------------------------------------------------
    def tick(self, obj: Obj) -> None:
        if self.finished:
            self.write_status(obj)
            return
        replicas, run_policy, nproc = parse(obj)
        backoff = as_int(run_policy.get("backoffLimit"), 6, "spec.runPolicy.backoffLimit")
        deadline = as_int(run_policy.get("activeDeadlineSeconds"), None, "spec.runPolicy.activeDeadlineSeconds", 1)
        name = self.name
        if get_condition(self.conditions, "Created") is None:
            self._cond("Created", "True", f"{KIND}Created", f"{KIND} {name} is created.")

        admit = kueue_admission(self.ctl.kube, obj)
        if admit is not None and admit != bool(run_policy.get("suspend")):
            self.ctl.kube.patch(PYTORCHJOBS, self.namespace, name, {"spec": {"runPolicy": {"suspend": admit}}})
            run_policy = {**run_policy, "suspend": admit}

        if run_policy.get("suspend"):
            if not self.suspended:
                self.kill_all("Killed", "job suspended")
                for p in self.pods.values():
                    p.delete_object()
                self.pods = {}
                self.suspended = True
                self.start_mono = None
                self.start_time = None
                msg = f"{KIND} {name} is suspended."
                self._cond("Suspended", "True", f"{KIND}Suspended", msg)
                c = get_condition(self.conditions, "Running")
                if c and c.get("status") == "True":
                    self._cond("Running", "False", f"{KIND}Suspended", msg)
            self.replica_statuses = {}
            self.write_status(obj)
            return
        if self.suspended:
            self.suspended = False
            self._cond("Suspended", "False", f"{KIND}Resumed", f"{KIND} {name} is resumed.")

        if not self.pods:
            self.start_mono = time.monotonic()
            self.start_time = now()
            self.start_gang(replicas, nproc)

        for p in self.pods.values():
            p.tick()

        failed = [k for k, p in self.pods.items() if p.phase == "Failed"]
        master = self.pods.get(("Master", 0))
        if deadline is not None and self.start_mono is not None and time.monotonic() - self.start_mono >= deadline:
            self.fail(f"{KIND} {name} has failed because it was active longer than specified deadline")
        elif failed:
            rtype = failed[0][0]
            n = sum(1 for rt, _ in failed if rt == rtype)
            retryable = replicas[rtype].retryable
            if replicas[rtype].exit_code_policy:
                retryable = all(retryable_exit(self.pods[k].exit_code) for k in failed)
            if retryable and self.restarts < backoff:
                self.restarts += 1
                self.kill_all("Killed", "restarting the gang")
                self._cond("Restarting", "True", f"{KIND}Restarting",
                           f"{KIND} {name} is restarting because {n} {rtype} replica(s) failed.")
                self.ctl.kube.event(self.obj_ref(), f"{KIND}Restarting",
                                    f"{KIND} {name} is restarting because {n} {rtype} replica(s) failed.",
                                    "Warning", component="pytorchjob-controller")
                self.start_gang(replicas, nproc)
            elif retryable:
                self.fail(f"{KIND} {name} has failed because it has reached the specified backoff limit")
            else:
                self.fail(f"{KIND} {name} is failed because {n} {rtype} replica(s) failed.")
        else:
            if master is not None:
                done = master.phase == "Succeeded"
            else:
                done = all(p.phase == "Succeeded" for p in self.pods.values())
            if done:
                still = [p for p in self.pods.values() if not p.finished]
                if self.success_mono is None:
                    self.success_mono = time.monotonic()
                if still and time.monotonic() - self.success_mono < SUCCESS_GRACE_S:
                    pass  # let the workers finish on their own first
                else:
                    for p in still:
                        p.kill("Killed", "job succeeded")
                    self.finished = "Succeeded"
                    self.completion_time = now()
                    self.replica_statuses = self.counts()
                    msg = f"{KIND} {name} is successfully completed."
                    self._cond("Succeeded", "True", f"{KIND}Succeeded", msg)
                    self.ctl.kube.event(self.obj_ref(), f"{KIND}Succeeded", msg,
                                        component="pytorchjob-controller")
            elif any(p.phase == "Running" for p in self.pods.values()):
                self._cond("Running", "True", f"{KIND}Running", f"{KIND} {name} is running.")
        if not self.finished:
            self.replica_statuses = self.counts()
        self.write_status(obj)

    def write_status(self, obj: Obj) -> None:
        st: Obj = {"conditions": self.conditions, "replicaStatuses": self.replica_statuses}
        if self.start_time:
            st["startTime"] = self.start_time
        if self.completion_time:
            st["completionTime"] = self.completion_time
        current = obj.get("status") or {}
        patch = status_diff({k: v for k, v in current.items() if k != "lastReconcileTime"}, st)
        if patch:
            patch["lastReconcileTime"] = now()
            self.ctl.kube.patch(PYTORCHJOBS, self.namespace, self.name, {"status": patch}, status=True)
            obj["status"] = {**st, "lastReconcileTime": patch["lastReconcileTime"]}


class PyTorchJobController(RunController):
    resource = PYTORCHJOBS
    label = "pytorchjob"

    def __init__(self, kube: Kube, workdir: Path, env_base: dict[str, str] | None = None) -> None:
        super().__init__()
        self.kube = kube
        self.workdir = Path(workdir)
        self.env_base = env_base

    def new_run(self, obj: Obj) -> PyTorchJobRun:
        return PyTorchJobRun(self, obj)

    def on_invalid(self, run: PyTorchJobRun, obj: Obj, e: SpecError) -> None:
        super().on_invalid(run, obj, e)
        if get_condition(run.conditions, "Created") is None:
            run._cond("Created", "True", f"{KIND}Created", f"{KIND} {run.name} is created.")
        run.fail(f"{KIND} {run.name} is invalid: {e}")
        run.write_status(obj)

    def forget(self, key: tuple[str, str]) -> None:
        """The PyTorchJob is gone: kill its processes (the API server garbage-collects its pods)."""
        self.runs.pop(key).kill_all("Killed", "PyTorchJob deleted")

    def stop(self) -> None:
        for run in self.runs.values():
            for p in run.pods.values():
                if not p.finished:
                    p.kill(quiet=True)
        self.runs.clear()
