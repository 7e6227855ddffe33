"""The embedded cluster: API server, S3 and the executor, on loopback.

    with EmbeddedCluster(".loom") as cluster:
        cluster.kubeconfig   # Path: .loom/kubeconfig
        cluster.s3_env       # LOOM_S3_ENDPOINT, AWS_ACCESS_KEY_ID, ...
        cluster.api_url      # http://127.0.0.1:PORT
        cluster.executor     # the Executor (proxies, metrics)

``workdir/env`` holds ``export`` lines of the S3 env and KUBECONFIG, for a shell.
"""
from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

log = logging.getLogger("loom.local.cluster")


class EmbeddedCluster:
    def __init__(self, workdir: str | Path, *, api_port: int = 0, s3_port: int = 0, interval: float = 0.3,
                 ready_timeout: float = 120.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.api_port = api_port
        self.s3_port = s3_port
        self.interval = interval
        self.ready_timeout = ready_timeout
        self.apiserver: Any = None
        self.s3: Any = None
        self.executor: Any = None

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.workdir / "env"

    @property
    def api_url(self) -> str:
        return self.apiserver.url

    @property
    def s3_env(self) -> dict[str, str]:
        return self.s3.env()

    def env(self) -> dict[str, str]:
        """The S3 env plus KUBECONFIG: what a client of this cluster needs."""
        return {**self.s3_env, "KUBECONFIG": str(self.kubeconfig)}

    def start(self) -> "EmbeddedCluster":
        from .apiserver import EmbeddedApiServer
        from .executor import Executor
        from .s3 import EmbeddedS3

        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.apiserver = EmbeddedApiServer(port=self.api_port)
            self.apiserver.start()
            self.apiserver.write_kubeconfig(self.kubeconfig)
            self.s3 = EmbeddedS3(port=self.s3_port)
            self.s3.start()
            self.executor = Executor(str(self.kubeconfig), self.workdir / "executor", s3_env=self.s3.env(),
                                     interval=self.interval, ready_timeout=self.ready_timeout)
            self.executor.start()
            self.env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Tear down in reverse order: executor (kills every child), S3, API server."""
        for attr in ("executor", "s3", "apiserver"):
            part = getattr(self, attr)
            if part is None:
                continue
            try:
                part.stop()
            except Exception:
                log.exception("stopping %s", attr)
            setattr(self, attr, None)

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
