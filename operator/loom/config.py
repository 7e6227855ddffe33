"""The operator's settings, read once from its environment."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    bucket: str = "loom"
    s3_endpoint: str = "http://minio.loom-system:9000"
    # The namespace Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    # pods get by envFrom; the operator never copies its values anywhere.
    s3_secret: str = "loom-s3"
    workload_image: str = "ghcr.io/loom-dev/loom-workload:0.1.0"
    reconcile_interval: float = 2.0

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        return cls(
            bucket=env.get("LOOM_S3_BUCKET", cls.bucket),
            s3_endpoint=env.get("LOOM_S3_ENDPOINT", cls.s3_endpoint),
            s3_secret=env.get("LOOM_S3_SECRET", cls.s3_secret),
            workload_image=env.get("LOOM_WORKLOAD_IMAGE", cls.workload_image),
            reconcile_interval=float(env.get("LOOM_RECONCILE_INTERVAL", cls.reconcile_interval)),
        )

    def prefix(self, namespace: str, *parts: str) -> str:
        """Every object a resource produces lives under its namespace's prefix."""
        return "/".join([f"s3://{self.bucket}", namespace, *parts])
