"""The batch/v1 Job controller, locally: pods as processes, status as the real one writes it."""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from .controller import RunController
from .kube import JOBS, PODS, Kube, Obj, finished_as, now, set_condition, status_diff
from .pods import LocalPod, SpecError, as_int, owner_ref

log = logging.getLogger("loom.local.executor")

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_ALPHABET) for _ in range(n))


class JobRun:
    """What the controller knows about one Job (one uid)."""

    def __init__(self, ctl: "JobController", job: Obj) -> None:
        self.ctl = ctl
        meta = job.get("metadata") or {}
        self.namespace = meta.get("namespace") or "default"
        self.name = meta["name"]
        self.uid = meta.get("uid") or ""
        self.owner = owner_ref({**job, "apiVersion": "batch/v1", "kind": "Job"})
        status = job.get("status") or {}
        self.finished: str | None = finished_as(status, "Complete", "Failed")  # "Complete" | "Failed" | None
        self.conditions: list[Obj] = list(status.get("conditions") or []) if self.finished else []
        self.pods: list[LocalPod] = []
        self.counted: set[int] = set()  # pods already in succeeded/failed
        self.succeeded = int(status.get("succeeded") or 0) if self.finished else 0
        self.failed = int(status.get("failed") or 0) if self.finished else 0
        self.start_time: str | None = status.get("startTime") if self.finished else None
        self.start_mono: float | None = None
        self.completion_time: str | None = status.get("completionTime") if self.finished else None

    # -- helpers -------------------------------------------------------------
    def active(self) -> list[LocalPod]:
        return [p for p in self.pods if not p.finished]

    def kill_all(self, reason: str = "Killed", message: str | None = None) -> None:
        for p in self.active():
            p.kill(reason, message)

    def finish(self, kind: str, reason: str, message: str) -> None:
        self.kill_all("DeadlineExceeded" if reason == "DeadlineExceeded" else "Killed", message)
        self.finished = kind
        ts = now()
        if kind == "Complete":
            self.completion_time = ts
            self.conditions = set_condition(self.conditions, "SuccessCriteriaMet", "True", reason, message,
                                            lastProbeTime=ts)
            self.conditions = set_condition(self.conditions, "Complete", "True", reason, message, lastProbeTime=ts)
        else:
            self.conditions = set_condition(self.conditions, "FailureTarget", "True", reason, message,
                                            lastProbeTime=ts)
            self.conditions = set_condition(self.conditions, "Failed", "True", reason, message, lastProbeTime=ts)
        self.ctl.kube.event({"apiVersion": "batch/v1", "kind": "Job",
                             "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}},
                            "Completed" if kind == "Complete" else reason, message,
                            "Normal" if kind == "Complete" else "Warning", component="job-controller")

    # -- the reconcile step --------------------------------------------------
    def tick(self, job: Obj) -> None:
        spec = job.get("spec") or {}
        if not isinstance(spec, dict):
            raise SpecError("spec must be an object")
        if self.finished:
            self.write_status(job)
            return
        backoff = as_int(spec.get("backoffLimit"), 6, "spec.backoffLimit")
        deadline = as_int(spec.get("activeDeadlineSeconds"), None, "spec.activeDeadlineSeconds", 1)
        for field in ("completions", "parallelism"):  # what Loom emits: one pod at a time, one success
            if as_int(spec.get(field), 1, f"spec.{field}") != 1:
                raise SpecError(f"spec.{field}: only 1 is supported by the local executor")
        if spec.get("completionMode", "NonIndexed") != "NonIndexed":
            raise SpecError(f"spec.completionMode: only NonIndexed is supported by the local executor, "
                            f"got {spec.get('completionMode')!r}")
        template = spec.get("template")
        if not isinstance(template, dict) or not (template.get("spec") or {}).get("containers"):
            raise SpecError("spec.template.spec.containers is required")

        if self.start_mono is None:
            self.start_mono = time.monotonic()
            self.start_time = now()

        for p in self.active():
            p.tick()
        for p in self.pods:
            if not p.finished or id(p) in self.counted:
                continue
            self.counted.add(id(p))
            phase = p.phase
            if phase == "Succeeded":
                self.succeeded += 1
            elif phase == "Failed":
                self.failed += 1
                tail = p.log_tail(400).splitlines()[-1:] or [""]
                self.ctl.kube.event(
                    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p.name, "namespace": p.namespace}},
                    "BackOff" if p.reason != "StartError" else "Failed",
                    f"container exited with code {p.exit_code}" + (f": {p.message}" if p.reason == "StartError"
                                                                   else (f"; last log line: {tail[0]}" if tail[0] else "")),
                    "Warning", component="kubelet")

        if deadline is not None and time.monotonic() - self.start_mono >= deadline:
            self.finish("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif self.failed > backoff:
            self.finish("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif self.succeeded >= 1:
            self.finish("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif not self.active():
            self.start_pod(template)
        self.write_status(job)

    def start_pod(self, template: Obj) -> None:
        labels = {"job-name": self.name, "controller-uid": self.uid,
                  "batch.kubernetes.io/job-name": self.name, "batch.kubernetes.io/controller-uid": self.uid}
        annotations = {"batch.kubernetes.io/job-tracking": ""}
        pod = LocalPod(self.ctl.kube, self.ctl.workdir, self.namespace, f"{self.name}-{random_suffix()}", template,
                       labels, self.owner, {}, annotations, env_base=self.ctl.env_base)
        self.pods.append(pod)
        pod.start()

    def write_status(self, job: Obj) -> None:
        active = self.active()
        st: Obj = {}
        if self.start_time:
            st["startTime"] = self.start_time
        if self.completion_time and self.finished == "Complete":
            st["completionTime"] = self.completion_time
        if active:
            st["active"] = len(active)
        st["ready"] = sum(1 for p in active if p.phase == "Running")
        if self.succeeded:
            st["succeeded"] = self.succeeded
        if self.failed:
            st["failed"] = self.failed
        st["terminating"] = 0
        st["uncountedTerminatedPods"] = {}
        if self.conditions:
            st["conditions"] = self.conditions
        patch = status_diff(job.get("status"), st)
        if patch:
            self.ctl.kube.patch(JOBS, self.namespace, self.name, {"status": patch}, status=True)
            job["status"] = st


class JobController(RunController):
    resource = JOBS
    label = "job"

    def __init__(self, kube: Kube, workdir: Path, env_base: dict[str, str] | None = None) -> None:
        super().__init__()
        self.kube = kube
        self.workdir = Path(workdir)
        self.env_base = env_base

    def new_run(self, obj: Obj) -> JobRun:
        return JobRun(self, obj)

    def on_new(self, run: JobRun) -> None:
        if not run.finished:
            self._collect_orphans(run)

    def on_invalid(self, run: JobRun, obj: Obj, error: SpecError) -> None:
        super().on_invalid(run, obj, error)
        run.finish("Failed", "InvalidSpec", str(error))
        run.write_status(obj)

    def _collect_orphans(self, run: JobRun) -> None:
        """Pods of this Job left by an earlier executor: their processes died with it."""
        try:
            for pod in self.kube.list(PODS, run.namespace):
                refs = (pod.get("metadata") or {}).get("ownerReferences") or []
                if any(r.get("uid") == run.uid and r.get("kind") == "Job" for r in refs) and \
                        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    self.kube.delete(PODS, run.namespace, pod["metadata"]["name"])
        except Exception as e:
            log.debug("orphan pods of %s/%s: %s", run.namespace, run.name, e)

    def forget(self, key: tuple[str, str]) -> None:
        """The Job is gone: kill its processes (the API server garbage-collects its pods)."""
        self.runs.pop(key).kill_all("Killed", "Job deleted")

    def stop(self) -> None:
        for run in self.runs.values():
            for p in run.active():
                p.kill(quiet=True)
        self.runs.clear()
