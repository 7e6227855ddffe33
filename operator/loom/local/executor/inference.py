"""The serving.kserve.io/v1beta1 InferenceService controller (KServe serverless), locally.

Each distinct predictor spec is a revision ``<name>-predictor-0000N``: a storage
initializer (download ``storageUri`` with the ServiceAccount's S3 Secret), then a
``loom.workloads.serve`` process on a free loopback port, Ready once
``/v2/models/<name>/ready`` answers 200. One :class:`~.proxy.TrafficProxy` per
InferenceService splits traffic between the latest ready revision (the canary,
``canaryTrafficPercent``) and the latest rolled-out one, as KServe does over
Knative; the status is written the way KServe writes it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loom.backends.storage import DEFAULT_REGION, Storage, StorageError, make_uri, parse_uri

from ..s3 import free_port
from .controller import RunController
from .kube import INFERENCESERVICES, SECRETS, SERVICEACCOUNTS, Kube, Obj, now, set_condition, \
    status_diff
from .pods import ConfigError, SpecError, base_env, kill_process_group, resolve_env, secret_data, spawn, tail
from .proxy import ProxyHub, TrafficProxy

log = logging.getLogger("loom.local.executor")

SUPPORTED_FORMATS = {"onnx"}
DEFAULT_READY_TIMEOUT = 120.0


class StorageInitError(Exception):
    pass


def _duration(value: str | None) -> float | None:
    """'90s', '2m', '1h', '30' -> seconds."""
    if not value:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not m:
        return None
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


# -- storage initializer ------------------------------------------------------
def s3_settings(kube: Kube, namespace: str, sa_name: str | None, fallback: dict[str, str]) -> dict[str, str]:
    """Endpoint URL, key pair and region the way KServe's credential builder finds
    them: the Secrets listed by the predictor's ServiceAccount; else the executor's own env."""
    sa = kube.get(SERVICEACCOUNTS, namespace, sa_name or "default")
    if sa is None and sa_name:
        raise StorageInitError(f'serviceaccount "{sa_name}" not found in namespace "{namespace}"')
    default_region = fallback.get("LOOM_S3_REGION") or DEFAULT_REGION
    for ref in (sa or {}).get("secrets") or []:
        name = (ref or {}).get("name")
        secret = kube.get(SECRETS, namespace, name) if name else None
        if secret is None:
            continue
        try:
            data = secret_data(secret)
        except ConfigError as e:
            raise StorageInitError(f'secret "{name}": {e}') from None
        if "AWS_ACCESS_KEY_ID" not in data or "AWS_SECRET_ACCESS_KEY" not in data:
            continue
        ann = (secret.get("metadata") or {}).get("annotations") or {}
        endpoint = ann.get("serving.kserve.io/s3-endpoint")
        if endpoint:
            parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
            use_https = ann.get("serving.kserve.io/s3-usehttps")
            secure = use_https not in ("0", "false", "False") if use_https is not None else parsed.scheme != "http"
            endpoint = f"{'https' if secure else 'http'}://{parsed.netloc}"
        else:
            endpoint = _fallback_endpoint(fallback)
        return {"endpoint": endpoint, "access_key": data["AWS_ACCESS_KEY_ID"],
                "secret_key": data["AWS_SECRET_ACCESS_KEY"],
                "region": ann.get("serving.kserve.io/s3-region") or default_region}
    if not fallback.get("LOOM_S3_ENDPOINT") and not fallback.get("AWS_ACCESS_KEY_ID"):
        raise StorageInitError(
            f'no S3 credentials: serviceaccount "{sa_name or "default"}" lists no Secret with AWS_ACCESS_KEY_ID')
    return {"endpoint": _fallback_endpoint(fallback), "access_key": fallback.get("AWS_ACCESS_KEY_ID", ""),
            "secret_key": fallback.get("AWS_SECRET_ACCESS_KEY", ""), "region": default_region}


def _fallback_endpoint(env: dict[str, str]) -> str:
    url = env.get("LOOM_S3_ENDPOINT") or ""
    if not url:
        raise StorageInitError("no S3 endpoint (serving.kserve.io/s3-endpoint annotation or LOOM_S3_ENDPOINT)")
    return url


def download(uri: str, dest: Path, settings: dict[str, str]) -> list[Path]:
    """Download an object (into ``dest/<basename>``) or every object under a prefix."""
    out: list[Path] = []
    try:
        storage = Storage(settings["endpoint"], settings["access_key"], settings["secret_key"],
                          region=settings["region"])
        bucket, key = parse_uri(uri)
        if key and not key.endswith("/") and storage.exists(uri):
            return [storage.get_file(uri, dest / key.rsplit("/", 1)[-1])]
        prefix = key.rstrip("/") + "/" if key else ""
        for obj in storage.list(make_uri(bucket, prefix)):
            rel = obj.key[len(prefix):]
            if rel and ".." not in rel.split("/"):
                out.append(storage.get_file(obj.uri, dest / rel))
    except StorageError as e:
        raise StorageInitError(f"failed to download {uri}: {e}") from None
    if not out:
        raise StorageInitError(f"no objects found at {uri}")
    return out


# -- revisions ----------------------------------------------------------------
class Revision:
    """One revision: storage initializer, then the model server process."""

    def __init__(self, ctl: "InferenceServiceController", isvc: "IsvcRun", number: int, predictor: Obj,
                 key: str) -> None:
        self.ctl = ctl
        self.isvc = isvc
        self.name = f"{isvc.name}-predictor-{number:05d}"
        self.predictor = predictor
        self.key = key
        self.state = "Pending"  # Pending, Downloading, Loading, Ready, Failed, Stopped
        self.failure: Obj | None = None  # KServe FailureInfo
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.dir = ctl.workdir / "isvc" / isvc.namespace / isvc.name / self.name
        self.log_path = self.dir / "log.txt"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"rev-{self.name}", daemon=True)
        self._thread.start()

    def _fail(self, location: str, reason: str, message: str, exit_code: int | None = None) -> None:
        if self._stop.is_set():
            return
        self.failure = {"location": location, "reason": reason, "message": message,
                        "modelRevisionName": self.name, "time": now()}
        if exit_code is not None:
            self.failure["exitCode"] = exit_code
        self.state = "Failed"
        log.info("revision %s failed: %s", self.name, message)
        self.ctl.wake()

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as e:  # never let a thread die silently
            log.exception("revision %s", self.name)
            self._fail("kserve-container", "ModelLoadFailed", f"{e.__class__.__name__}: {e}")

    def _serve(self) -> None:
        model = self.predictor.get("model") or {}
        ns, name = self.isvc.namespace, self.isvc.name
        # storage initializer
        self.state = "Downloading"
        model_dir = self.dir / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir, ignore_errors=True)
        try:
            settings = s3_settings(self.ctl.kube, ns, self.predictor.get("serviceAccountName"), self.ctl.s3_env)
            download(model["storageUri"], model_dir, settings)
        except StorageInitError as e:
            self._fail("storage-initializer", "ModelLoadFailed", str(e), 1)
            return
        if self._stop.is_set():
            return
        # the model server
        self.state = "Loading"
        try:
            env = resolve_env(self.ctl.kube, ns, model, {"name": self.name, "namespace": ns})
        except (ConfigError, SpecError) as e:
            self._fail("kserve-container", "InvalidPredictorSpec", str(e))
            return
        self.port = free_port()
        argv = [sys.executable, "-m", "loom.workloads.serve", "--model_name", name,
                "--model_dir", str(model_dir), "--http_port", str(self.port)]
        full_env = {**self.ctl.env_base, "PYTHONUNBUFFERED": "1", "STORAGE_URI": model["storageUri"],
                    "K_REVISION": self.name, "K_SERVICE": f"{name}-predictor", "PORT": str(self.port), **env}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            logf.write(f"--- {now()} {' '.join(argv)}\n".encode())
            self.proc = spawn(argv, cwd=self.dir, env=full_env, log_file=logf)
        if self._stop.is_set():
            kill_process_group(self.proc, 1)
            return
        deadline = time.monotonic() + self.isvc.ready_timeout
        url = f"http://127.0.0.1:{self.port}/v2/models/{name}/ready"
        while not self._stop.is_set():
            rc = self.proc.poll()
            if rc is not None:
                self._fail("kserve-container", "ModelLoadFailed",
                           _last_lines(self.log_path) or f"model server exited with code {rc}", rc)
                return
            if _http_ok(url):
                self.state = "Ready"
                self.ctl.wake()
                break
            if time.monotonic() > deadline:
                kill_process_group(self.proc, 1)
                self._fail("kserve-container", "ModelLoadFailed",
                           f"model server not ready within {self.isvc.ready_timeout:g}s"
                           + (f"; last log: {_last_lines(self.log_path)}" if _last_lines(self.log_path) else ""))
                return
            self._stop.wait(0.15)
        # watch the process while it serves
        while not self._stop.wait(0.3):
            rc = self.proc.poll()
            if rc is not None:
                self._fail("kserve-container", "RuntimeUnhealthy",
                           f"model server exited with code {rc}: {_last_lines(self.log_path)}", rc)
                return

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None:
            kill_process_group(self.proc, 2)
        if self.state != "Failed":
            self.state = "Stopped"

    @property
    def alive(self) -> bool:
        return self.state in ("Pending", "Downloading", "Loading", "Ready")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200
    except Exception:
        return False


def _last_lines(path: Path, n: int = 3) -> str:
    """The last meaningful log lines (a traceback's last line is its message)."""
    lines = [ln for ln in tail(path, 4096).splitlines() if ln.strip() and not ln.startswith("---")]
    return " | ".join(lines[-n:])[-1000:]


# -- one InferenceService ------------------------------------------------------
def parse_predictor(obj: Obj) -> tuple[Obj, str, int | None]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise SpecError("spec must be an object")
    predictor = spec.get("predictor")
    if not isinstance(predictor, dict):
        raise SpecError("spec.predictor is required")
    model = predictor.get("model")
    if not isinstance(model, dict):
        raise SpecError("spec.predictor.model is required (modelFormat, storageUri)")
    fmt = (model.get("modelFormat") or {}).get("name") if isinstance(model.get("modelFormat"), dict) else None
    if not fmt:
        raise SpecError("spec.predictor.model.modelFormat.name is required")
    if str(fmt).lower() not in SUPPORTED_FORMATS:
        raise SpecError(f"No runtime found to support predictor with model type: {fmt}", )
    uri = model.get("storageUri")
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise SpecError(f"spec.predictor.model.storageUri must be an s3:// URI, got {uri!r}")
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None:
        if isinstance(canary, bool) or not isinstance(canary, (int, float)) or not 0 <= canary <= 100:
            raise SpecError(f"spec.predictor.canaryTrafficPercent must be 0..100, got {canary!r}")
        canary = int(canary)
    key = json.dumps({k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}, sort_keys=True)
    return predictor, key, canary


_TARGET_STATE = {"Pending": "Pending", "Downloading": "Loading", "Loading": "Loading", "Ready": "Loaded",
                 "Failed": "FailedToLoad", "Stopped": "Pending"}


class IsvcRun:
    def __init__(self, ctl: "InferenceServiceController", obj: Obj) -> None:
        self.ctl = ctl
        meta = obj.get("metadata") or {}
        self.namespace = meta.get("namespace") or "default"
        self.name = meta["name"]
        self.uid = meta.get("uid") or ""
        prev = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
        m = re.search(r"-(\d+)$", prev.get("latestCreatedRevision") or "")
        self.counter = int(m.group(1)) if m else 0  # numbering continues after an executor restart
        self.revisions: list[Revision] = []
        self.rolled_out: Revision | None = None
        self.previous_rolled_out: str | None = None
        self.traffic: list[Obj] = []
        self.conditions: list[Obj] = []
        self.proxy: TrafficProxy | None = None
        self.url: str | None = None
        self.spec_error: str | None = None
        self.ready_timeout = DEFAULT_READY_TIMEOUT

    def stop(self) -> None:
        for r in self.revisions:
            r.stop()
        if self.proxy is not None:
            self.ctl.hub.remove(self.proxy)
            self.proxy = None

    def tick(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        self.ready_timeout = _duration(ann.get("serving.knative.dev/progress-deadline")) or self.ctl.ready_timeout
        try:
            predictor, key, canary = parse_predictor(obj)
        except SpecError as e:
            self.spec_error = str(e)
            self.write_status(obj, None)
            return
        self.spec_error = None
        if self.proxy is None:
            self.proxy = self.ctl.hub.add(f"{self.namespace}/{self.name}")
        if not self.revisions or self.revisions[-1].key != key:
            self.counter += 1
            rev = Revision(self.ctl, self, self.counter, predictor, key)
            self.revisions.append(rev)
            rev.start()

        latest_created = self.revisions[-1]
        ready = [r for r in self.revisions if r.state == "Ready"]
        latest_ready = ready[-1] if ready else None
        if self.rolled_out is not None and self.rolled_out.state != "Ready":
            self.rolled_out = None  # it died: nothing to keep traffic on
        traffic: list[Obj] = []
        if latest_ready is not None:
            if canary is not None and canary != 100 and self.rolled_out is not None:
                traffic = [
                    {"revisionName": latest_ready.name, "percent": canary, "latestRevision": True, "tag": "latest"},
                    {"revisionName": self.rolled_out.name, "percent": 100 - canary, "latestRevision": False,
                     "tag": "prev"},
                ]
            else:
                traffic = [{"revisionName": latest_ready.name, "percent": 100, "latestRevision": True}]
                if self.rolled_out is not latest_ready:
                    if self.rolled_out is not None:
                        self.previous_rolled_out = self.rolled_out.name
                    self.rolled_out = latest_ready
        self.traffic = traffic
        for t in traffic:
            t["url"] = self.proxy.url
        weights: dict[str, int] = {}
        for t in traffic:
            weights[t["revisionName"]] = weights.get(t["revisionName"], 0) + t["percent"]
        self.proxy.set_routes([(r.name, r.port, weights[r.name]) for r in self.revisions
                               if r.name in weights and r.port is not None])
        if latest_ready is not None:
            self.url = self.proxy.url
        # revisions nothing routes to and nothing waits for are scaled to zero
        keep = {latest_created, latest_ready, self.rolled_out}
        for r in self.revisions:
            if r not in keep and r.alive:
                r.stop()
        self.revisions = [r for r in self.revisions if r in keep or r.state == "Failed"][-20:]
        self.write_status(obj, latest_created, latest_ready)

    # -- status --------------------------------------------------------------
    def write_status(self, obj: Obj, latest: Revision | None, latest_ready: Revision | None = None) -> None:
        gen = (obj.get("metadata") or {}).get("generation")
        conds = self.conditions
        st: Obj = {}
        if self.spec_error:
            msg = self.spec_error
            reason = "NoSupportingRuntime" if msg.startswith("No runtime") else "InvalidSpec"
            for t in ("PredictorReady", "Ready"):
                conds = set_condition(conds, t, "False", reason, msg)
            st["modelStatus"] = {"transitionStatus": "InvalidSpec",
                                 "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                                 "lastFailureInfo": {"reason": "InvalidPredictorSpec" if reason == "InvalidSpec"
                                                     else reason, "message": msg}}
        else:
            assert latest is not None
            if latest.state == "Ready":
                config = ("True", None, None)
            elif latest.state == "Failed":
                config = ("False", "RevisionFailed",
                          f'Revision "{latest.name}" failed with message: {(latest.failure or {}).get("message")}.')
            else:
                config = ("Unknown", "RevisionMissing", f'Configuration "{self.name}-predictor" is waiting '
                          f'for a Revision to become ready.')
            if latest_ready is not None:
                route = ("True", None, None)
            elif latest.state == "Failed":
                route = ("False", "RevisionFailed", config[2])
            else:
                route = ("Unknown", "RevisionMissing", "Configuration is waiting for a Revision to become ready.")
            conds = set_condition(conds, "PredictorConfigurationReady", *config)
            conds = set_condition(conds, "PredictorRouteReady", *route)
            conds = set_condition(conds, "LatestDeploymentReady", *config)
            pred = _and([config, route])
            conds = set_condition(conds, "PredictorReady", *pred)
            if latest_ready is not None:
                ingress = ("True", None, None)
            elif latest.state == "Failed":
                ingress = ("False", "PredictorIngressNotCreated", "Ingress has not been created: no ready revision")
            else:
                ingress = ("Unknown", "PredictorIngressNotCreated", "Ingress has not been created yet")
            conds = set_condition(conds, "IngressReady", *ingress)
            conds = set_condition(conds, "Ready", *_and([pred, ingress]))

            predictor: Obj = {"latestCreatedRevision": latest.name}
            if latest_ready is not None:
                predictor["latestReadyRevision"] = latest_ready.name
            if self.rolled_out is not None:
                predictor["latestRolledoutRevision"] = self.rolled_out.name
            if self.previous_rolled_out:
                predictor["previousRolledoutRevision"] = self.previous_rolled_out
            if self.traffic:
                predictor["traffic"] = self.traffic
            if self.url:
                predictor["url"] = self.url
                predictor["address"] = {"url": self.url}
                st["url"] = self.url
                st["address"] = {"url": self.url}
            st["components"] = {"predictor": predictor}
            transition = {"Ready": "UpToDate", "Failed": "BlockedByFailedLoad"}.get(latest.state, "InProgress")
            active = "Loaded" if latest_ready is not None else \
                ("FailedToLoad" if latest.state == "Failed" else _TARGET_STATE[latest.state])
            model_status: Obj = {"transitionStatus": transition,
                                 "states": {"activeModelState": active,
                                            "targetModelState": _TARGET_STATE[latest.state]},
                                 "copies": {"failedCopies": 1 if latest.state == "Failed" else 0,
                                            "totalCopies": 1}}
            if latest.state == "Failed" and latest.failure:
                model_status["lastFailureInfo"] = latest.failure
            st["modelStatus"] = model_status
        self.conditions = conds
        st["conditions"] = conds
        if gen is not None:
            st["observedGeneration"] = gen
        patch = status_diff(obj.get("status"), st)
        if patch:
            self.ctl.kube.patch(INFERENCESERVICES, self.namespace, self.name, {"status": patch}, status=True)
            obj["status"] = st


def _and(parts: list[tuple[str, str | None, str | None]]) -> tuple[str, str | None, str | None]:
    for p in parts:
        if p[0] == "False":
            return p
    for p in parts:
        if p[0] == "Unknown":
            return p
    return ("True", None, None)


class InferenceServiceController(RunController):
    resource = INFERENCESERVICES
    label = "inferenceservice"

    def __init__(self, kube: Kube, workdir: Path, env_base: dict[str, str] | None = None,
                 s3_env: dict[str, str] | None = None, ready_timeout: float = DEFAULT_READY_TIMEOUT,
                 wake: Any = None) -> None:
        super().__init__()
        self.kube = kube
        self.workdir = Path(workdir)
        self.env_base = base_env() if env_base is None else env_base
        self.s3_env = dict(s3_env) if s3_env is not None else \
            {k: v for k, v in os.environ.items() if k.startswith(("LOOM_S3_", "AWS_"))}
        self.ready_timeout = ready_timeout
        self.hub = ProxyHub()
        self._wake = wake

    def wake(self) -> None:
        if self._wake is not None:
            self._wake()

    def new_run(self, obj: Obj) -> IsvcRun:
        return IsvcRun(self, obj)

    def forget(self, key: tuple[str, str]) -> None:
        self.runs.pop(key).stop()

    def proxy(self, namespace: str, name: str) -> TrafficProxy | None:
        run = self.runs.get((namespace, name))
        return run.proxy if run else None

    def stop(self) -> None:
        for run in list(self.runs.values()):
            run.stop()
        self.runs.clear()
        self.hub.stop()
