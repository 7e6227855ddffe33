"""The local executor: on this machine, the controllers a real cluster has.

    ex = Executor(api_client_or_kubeconfig, workdir, s3_env=...)
    ex.start()      # a background thread polls the API (every ``interval`` seconds)
    ...
    ex.stop()       # kills every child process

- batch/v1 Job (:mod:`.jobs`): pods as local processes, Job status as the Job
  controller writes it (Complete/Failed, backoffLimit, activeDeadlineSeconds).
- kubeflow.org/v1 PyTorchJob (:mod:`.pytorchjobs`): one process per replica with
  MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK, gang restarts, suspend.
- serving.kserve.io/v1beta1 InferenceService (:mod:`.inference`, :mod:`.proxy`):
  revisions served by ``loom.workloads.serve``, canary traffic behind one URL.

Polling over list calls keeps it simple and restart-safe: processes die with the
executor; on start, unfinished work is started again.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from .inference import InferenceServiceController
from .jobs import JobController
from .kube import Kube
from .pods import base_env
from .proxy import TrafficProxy
from .pytorchjobs import PyTorchJobController

log = logging.getLogger("loom.local.executor")

__all__ = ["Executor"]


class Executor:
    def __init__(self, api: k8s.ApiClient | str | Path | None, workdir: str | Path, *,
                 s3_env: dict[str, str] | None = None, interval: float = 0.3,
                 ready_timeout: float = 120.0) -> None:
        """``api``: an ApiClient or a kubeconfig path. ``s3_env``: the S3 connection
        used when an InferenceService has no ServiceAccount with S3 keys (default:
        this process's LOOM_S3_*/AWS_* variables). ``ready_timeout``: how long a model
        server may take to become ready (per InferenceService: annotation
        ``serving.knative.dev/progress-deadline``). Child processes inherit from the
        host only PATH, locale, HOME, CUDA... (``pods.INHERITED_ENV``)."""
        self.kube = Kube(str(api) if isinstance(api, Path) else api)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        env_base = base_env()
        self.jobs = JobController(self.kube, self.workdir, env_base)
        self.pytorchjobs = PyTorchJobController(self.kube, self.workdir, env_base)
        self.inference = InferenceServiceController(self.kube, self.workdir, env_base, s3_env,
                                                    ready_timeout, wake=self.wake)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reconcile pass at a time
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "Executor":
        if self._thread is not None:
            return self
        self._stop.clear()
        self.inference.hub.start()
        self._thread = threading.Thread(target=self._loop, name="loom-executor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with self._lock:
            for ctl in (self.inference, self.pytorchjobs, self.jobs):
                try:
                    ctl.stop()
                except Exception:
                    log.exception("executor: stopping %s", ctl.__class__.__name__)
        self.kube.close()

    def __enter__(self) -> "Executor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Run the next pass now (a revision became ready, ...)."""
        self._wake.set()

    def reconcile_once(self) -> None:
        """One pass of every controller (what the background thread repeats)."""
        with self._lock:
            for ctl in (self.jobs, self.pytorchjobs, self.inference):
                if self._stop.is_set():
                    return
                try:
                    ctl.reconcile()
                except Exception as e:  # the API is unreachable, ...: try again next pass
                    msg = f"{ctl.__class__.__name__}: {e.__class__.__name__}: {e}"
                    if msg != self.last_error:
                        log.warning("executor: %s", msg)
                    self.last_error = msg

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.reconcile_once()
            self._wake.wait(max(0.0, self.interval - (time.monotonic() - t0)))
            self._wake.clear()

    # -- for tests and the CLI ----------------------------------------------------
    def proxy(self, namespace: str, name: str) -> TrafficProxy | None:
        """The front proxy of an InferenceService (its ``metrics()``, ``url``)."""
        return self.inference.proxy(namespace, name)

    def metrics(self, namespace: str, name: str, since: float | None = None) -> dict[str, Any] | None:
        p = self.proxy(namespace, name)
        return p.metrics(since) if p else None
