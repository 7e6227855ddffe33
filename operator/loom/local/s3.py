"""An embedded S3 server on loopback (moto), for local mode and the tests."""

from __future__ import annotations

import socket
from typing import Any

from ..backends.storage import DEFAULT_BUCKET, DEFAULT_REGION, Storage


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedS3:
    """moto's ThreadedMotoServer with a default bucket.

    moto accepts any key pair; these are fixed so the env is reproducible.
    Note: moto keeps its state in process-global backends, so two servers in
    one process share their buckets.
    """

    access_key = "loom-local"
    secret_key = "loom-local-secret"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, bucket: str = DEFAULT_BUCKET,
                 region: str = DEFAULT_REGION) -> None:
        self.host = host
        self.port = port
        self.bucket = bucket
        self.region = region
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "EmbeddedS3":
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines

        if self._server is not None:
            return self
        if not self.port:
            self.port = free_port(self.host)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.storage().ensure_bucket(self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def env(self) -> dict[str, str]:
        return {
            "LOOM_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "LOOM_S3_BUCKET": self.bucket,
            "LOOM_S3_REGION": self.region,
        }

    def storage(self) -> Storage:
        return Storage(self.endpoint, self.access_key, self.secret_key, bucket=self.bucket, region=self.region)

    def __enter__(self) -> "EmbeddedS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
