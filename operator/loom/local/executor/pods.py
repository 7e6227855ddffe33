"""Pods as local processes: env resolution, argv, the process and its Pod object.

A :class:`LocalPod` owns one Pod object in the API and the local process(es)
that stand for its containers (init containers one after another, then the
first regular container). ``tick()`` polls the process and keeps the Pod's
``status`` (phase, containerStatuses) current.
"""
from __future__ import annotations

import base64
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .kube import CONFIGMAPS, PODS, SECRETS, Kube, Obj, is_conflict, now

log = logging.getLogger("loom.local.executor")

#: host variables a local process inherits (a pod inherits nothing from its node,
#: but a local process needs a PATH, a locale and, on a GPU box, the CUDA setup).
INHERITED_ENV = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP", "HOME", "USER", "SYSTEMROOT",
    "PYTHONPATH", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME",
)

PYTHON_NAMES = re.compile(r"^python(3(\.\d+)?)?$")


class SpecError(Exception):
    """The object cannot be run as written; the message goes to its status."""


class ConfigError(Exception):
    """A referenced Secret/ConfigMap (or key) is missing: the pod waits, as the kubelet does."""


def base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value).decode("utf-8")
    except Exception as e:
        raise ConfigError(f"secret value is not valid base64 UTF-8: {e}") from None


def secret_data(secret: Obj) -> dict[str, str]:
    """A Secret's decoded string data (ConfigError when a value is not base64 UTF-8)."""
    data = {k: _b64(v) for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})  # an API server folds it into data; the emulator may not
    return data


def read_source(kube: Kube, namespace: str, kind: str, name: str) -> dict[str, str] | None:
    """The decoded string data of a Secret (``kind="secret"``) or ConfigMap; None if absent."""
    if kind == "secret":
        obj = kube.get(SECRETS, namespace, name)
        return None if obj is None else secret_data(obj)
    obj = kube.get(CONFIGMAPS, namespace, name)
    if obj is None:
        return None
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR.sub(sub, value)


def _field_ref(path: str, pod_meta: Obj) -> str:
    labels = pod_meta.get("labels") or {}
    annotations = pod_meta.get("annotations") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (labels if m.group(1) == "labels" else annotations).get(m.group(2), "")
    return {
        "metadata.name": pod_meta.get("name", ""),
        "metadata.namespace": pod_meta.get("namespace", ""),
        "metadata.uid": pod_meta.get("uid", ""),
        "spec.nodeName": "loom-local",
        "spec.serviceAccountName": "default",
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }.get(path, "")


def resolve_env(kube: Kube, namespace: str, container: Obj, pod_meta: Obj,
                injected: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet builds it: ``envFrom`` first, then
    ``env`` in order (with ``$(VAR)`` expansion), then what a controller injects."""
    env: dict[str, str] = {}
    cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def source(kind: str, name: str) -> dict[str, str] | None:
        key = (kind, name)
        if key not in cache:
            cache[key] = read_source(kube, namespace, kind, name)
        return cache[key]

    for ef in container.get("envFrom") or []:
        if not isinstance(ef, dict):
            raise SpecError("envFrom entries must be objects")
        prefix = ef.get("prefix") or ""
        for kind, field in (("secret", "secretRef"), ("configmap", "configMapRef")):
            ref = ef.get(field)
            if ref is None:
                continue
            name = ref.get("name")
            if not name:
                raise SpecError(f"envFrom.{field} needs a name")
            data = source(kind, name)
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{"secret" if kind == "secret" else "configmap"} "{name}" not found')
            for k, v in data.items():
                env[prefix + k] = v

    for item in container.get("env") or []:
        if not isinstance(item, dict) or not item.get("name"):
            raise SpecError("env entries need a name")
        name = item["name"]
        if "valueFrom" in item and item["valueFrom"]:
            vf = item["valueFrom"]
            ref_kind = "secret" if "secretKeyRef" in vf else "configmap" if "configMapKeyRef" in vf else None
            if ref_kind:
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef") or {}
                data = source(ref_kind, ref.get("name", ""))
                key = ref.get("key")
                if data is None or key not in data:
                    if ref.get("optional"):
                        continue
                    what = "secret" if ref_kind == "secret" else "configmap"
                    if data is None:
                        raise ConfigError(f'{what} "{ref.get("name")}" not found')
                    raise ConfigError(f'couldn\'t find key {key} in {what} {namespace}/{ref.get("name")}')
                env[name] = data[key]
            elif "fieldRef" in vf:
                env[name] = _field_ref((vf["fieldRef"] or {}).get("fieldPath", ""), pod_meta)
            elif "resourceFieldRef" in vf:
                env[name] = "0"  # no resource accounting locally
            else:
                raise SpecError(f"env {name}: unsupported valueFrom {sorted(vf)}")
        else:
            env[name] = expand(str(item.get("value", "")), env)
    env.update(injected or {})
    return env


def build_argv(container: Obj, env: dict[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expansion; python -> this interpreter,
    torchrun -> ``python -m torch.distributed.run``."""
    command = container.get("command") or []
    args = container.get("args") or []
    if not isinstance(command, list) or not isinstance(args, list):
        raise SpecError(f"container {container.get('name')!r}: command and args must be lists")
    argv = [expand(str(a), env) for a in [*command, *args]]
    if not command:
        raise SpecError(
            f"container {container.get('name')!r} has no command; the local executor cannot run an "
            "image's entrypoint (set command, e.g. [python, -m, ...])")
    head = os.path.basename(argv[0])
    if PYTHON_NAMES.match(head):
        argv[0] = sys.executable
    elif head == "torchrun":
        argv[:1] = [sys.executable, "-m", "torch.distributed.run"]
    return argv


def _load_prctl() -> Any:
    """libc's prctl, loaded once in the parent: loading a library in the child of a
    multithreaded parent (between fork and exec) can deadlock on the loader's lock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except Exception:  # pragma: no cover - no glibc
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGKILL when the thread that started it ends (the
    executor died without stop())."""
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(argv: list[str], *, cwd: Path, env: dict[str, str], log_file: Any) -> subprocess.Popen:
    """Start a child in its own process group (so a kill reaches its children too)."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent if _PRCTL is not None else None)


def kill_process_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds; the group
    gets a final SIGKILL even when the leader had already exited (torchrun's
    workers may outlive it)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
    # the group may hold grandchildren that outlived their parent
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, max_bytes: int = 2048, max_lines: int = 80) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = data.splitlines()[-max_lines:]
    return "\n".join(lines).strip()


class LocalPod:
    """One Pod: its API object and the local process that runs it.

    phase: Pending -> Running -> Succeeded | Failed. ``tick()`` advances it.
    """

    def __init__(self, kube: Kube, workdir: Path, namespace: str, name: str, template: Obj,
                 labels: dict[str, str], owner: Obj | None, injected_env: dict[str, str] | None = None,
                 annotations: dict[str, str] | None = None, env_base: dict[str, str] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.template = template or {}
        spec = self.template.get("spec") or {}
        if not isinstance(spec, dict):
            raise SpecError("template.spec must be an object")
        containers = spec.get("containers") or []
        if not containers or not isinstance(containers, list) or not isinstance(containers[0], dict):
            raise SpecError("the pod template has no containers")
        self.spec = spec
        self.containers: list[Obj] = [c for c in (spec.get("initContainers") or []) if isinstance(c, dict)]
        self.n_init = len(self.containers)
        self.containers.append(containers[0])
        meta = self.template.get("metadata") or {}
        self.labels = {**(meta.get("labels") or {}), **labels}
        self.annotations = {**(meta.get("annotations") or {}), **(annotations or {})}
        self.owner = owner
        self.injected_env = injected_env or {}
        self.env_base = base_env() if env_base is None else env_base
        self.dir = Path(workdir) / "pods" / namespace / name
        self.log_path = self.dir / "log.txt"
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.exit_code: int | None = None
        self.restart_count = 0
        self.start_time: str | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.proc: subprocess.Popen | None = None
        self.step = 0  # index into self.containers
        self.waiting: tuple[str, str] | None = None
        self.uid: str | None = None
        self._written: Obj | None = None
        self._log_file = None

    # -- API object ----------------------------------------------------------
    def create_object(self) -> None:
        meta: Obj = {"name": self.name, "namespace": self.namespace, "labels": self.labels,
                     "annotations": {**self.annotations, "loom.dev/local-log": str(self.log_path)}}
        if self.owner:
            meta["ownerReferences"] = [self.owner]
        spec = {**self.spec, "nodeName": "loom-local"}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        try:
            obj = self.kube.create(PODS, self.namespace, body)
        except Exception as e:
            if not is_conflict(e):
                raise
            # a leftover of an earlier run (same deterministic name): replace it
            self.kube.delete(PODS, self.namespace, self.name)
            obj = self.kube.create(PODS, self.namespace, body)
        self.uid = ((obj or {}).get("metadata") or {}).get("uid")
        self._written = None
        self.write_status()

    def status(self) -> Obj:
        c = self.containers[-1]
        ready = self.phase == "Running"
        if self.phase in ("Succeeded", "Failed") and self.exit_code is not None:
            state: Obj = {"terminated": {"exitCode": self.exit_code,
                                         "reason": "Completed" if self.exit_code == 0 else (self.reason or "Error"),
                                         "startedAt": self.started_at, "finishedAt": self.finished_at}}
            if self.message and self.exit_code != 0:
                state["terminated"]["message"] = self.message
        elif self.phase == "Running" and self.step >= self.n_init:
            state = {"running": {"startedAt": self.started_at}}
        elif self.waiting:
            state = {"waiting": {"reason": self.waiting[0], "message": self.waiting[1]}}
        else:
            state = {"waiting": {"reason": "PodInitializing" if self.n_init else "ContainerCreating"}}
        cs = {"name": c.get("name", "main"), "image": c.get("image", ""), "imageID": "",
              "ready": ready, "started": ready, "restartCount": self.restart_count, "state": state}
        if self.proc is not None:
            cs["containerID"] = f"local://{self.proc.pid}"
        st: Obj = {
            "phase": self.phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True" if self.step >= self.n_init else "False"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": [cs],
        }
        if self.start_time:
            st["startTime"] = self.start_time
        if self.phase == "Failed" and self.reason in ("DeadlineExceeded", "Killed"):
            st["reason"] = self.reason
            if self.message:
                st["message"] = self.message
        return st

    def write_status(self) -> None:
        st = self.status()
        if st == self._written:
            return
        try:
            self.kube.patch(PODS, self.namespace, self.name, {"status": st}, status=True)
            self._written = st
        except Exception as e:  # the API is down or the pod is gone: try again next tick
            log.debug("pod %s/%s status: %s", self.namespace, self.name, e)

    def delete_object(self) -> None:
        try:
            self.kube.delete(PODS, self.namespace, self.name)
        except Exception as e:
            log.debug("delete pod %s/%s: %s", self.namespace, self.name, e)

    # -- process -------------------------------------------------------------
    def _launch(self) -> None:
        container = self.containers[self.step]
        meta = {"name": self.name, "namespace": self.namespace, "uid": self.uid or "",
                "labels": self.labels, "annotations": self.annotations}
        env = resolve_env(self.kube, self.namespace, container, meta, self.injected_env)
        argv = build_argv(container, env)
        full_env = {**self.env_base, "HOSTNAME": self.name, **env}
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab", buffering=0)
        self._log_file.write(f"--- {now()} {container.get('name', 'main')}: {' '.join(argv)}\n".encode())
        wd = container.get("workingDir")
        cwd = self.dir
        if wd and Path(wd).is_dir():
            cwd = Path(wd)
        try:
            self.proc = spawn(argv, cwd=cwd, env=full_env, log_file=self._log_file)
        except OSError as e:
            raise SpecError(f"cannot start {argv[0]!r}: {e.strerror or e}") from None

    def start(self) -> None:
        """Create the Pod and start its first container (if its config resolves)."""
        self.create_object()
        self.tick()

    def tick(self) -> str:
        """Advance: launch when possible, notice exits. Returns the phase."""
        if self.phase in ("Succeeded", "Failed"):
            return self.phase
        if self.proc is None:
            try:
                self._launch()
            except ConfigError as e:
                self.waiting = ("CreateContainerConfigError", str(e))
                self.write_status()
                return self.phase
            except SpecError as e:
                self._finish(128, "StartError", str(e))
                return self.phase
            self.waiting = None
            if self.start_time is None:
                self.start_time = now()
            self.started_at = now()
            self.phase = "Running"
        rc = self.proc.poll()
        if rc is not None:
            kill_process_group(self.proc)  # a container ends with its main process: so do its children
            if rc == 0 and self.step + 1 < len(self.containers):
                self.step += 1
                self.proc = None
                return self.tick()
            if rc == 0:
                self._finish(0, None, None)
            else:
                policy = self.containers[self.step].get("terminationMessagePolicy")
                msg = tail(self.log_path) if policy == "FallbackToLogsOnError" else None
                self._finish(rc, "Error" if rc > 0 else "Killed", msg)
        self.write_status()
        return self.phase

    def _finish(self, code: int, reason: str | None, message: str | None) -> None:
        self.exit_code = code
        self.reason = reason
        self.message = message
        self.finished_at = now()
        if self.started_at is None:
            self.started_at = self.finished_at
        self.phase = "Succeeded" if code == 0 else "Failed"
        self._close_log()
        self.write_status()

    def _close_log(self) -> None:
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
            self._log_file = None

    def kill(self, reason: str = "Killed", message: str | None = None, grace: float = 3.0,
             quiet: bool = False) -> None:
        """Stop the process; a pod not yet finished becomes Failed with ``reason``.
        ``quiet``: write nothing (the executor stops: its pods vanish with it, like a node's)."""
        if self.proc is not None:
            kill_process_group(self.proc, grace)
        if quiet:
            self._close_log()
            return
        if self.phase not in ("Succeeded", "Failed"):
            rc = self.proc.returncode if self.proc is not None and self.proc.returncode is not None else 137
            self._finish(rc if rc != 0 else 137, reason, message)
        self._close_log()

    def log_tail(self, max_bytes: int = 2048) -> str:
        return tail(self.log_path, max_bytes)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def owner_ref(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
            "uid": meta.get("uid") or "", "controller": True, "blockOwnerDeletion": True}


def as_int(value: Any, default: int | None, what: str, minimum: int = 0) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool):
        raise SpecError(f"{what} must be an integer")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be an integer, got {value!r}") from None
    if n < minimum:
        raise SpecError(f"{what} must be >= {minimum}, got {n}")
    return n
