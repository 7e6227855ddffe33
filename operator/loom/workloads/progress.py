"""Live training progress: the rank-0 trainer writes ``progress.json`` under the run's
output prefix; the operator reads it each tick into ``status.progress``.

``{"step", "totalSteps", "epoch", "loss", "samplesPerSecond", "updatedAt", "resumes": [...]}``.
Writes are throttled (``min_interval`` seconds) so progress never slows training much.
"""
from __future__ import annotations

import datetime
import time
from typing import Any

from ._task import join_uri

PROGRESS = "progress.json"


def progress_uri(prefix: str) -> str:
    return join_uri(prefix, PROGRESS)


class ProgressWriter:
    def __init__(self, storage: Any, prefix: str, total_steps: int, min_interval: float = 1.0) -> None:
        self.storage = storage
        self.uri = progress_uri(prefix)
        self.total_steps = total_steps
        self.min_interval = min_interval
        self.resumes: list[dict[str, Any]] = []
        self._last = 0.0
        self._t0 = time.monotonic()
        self._samples = 0

    def restart_clock(self) -> None:
        self._t0 = time.monotonic()
        self._samples = 0

    def add_samples(self, n: int) -> None:
        self._samples += n

    def throughput(self) -> float:
        elapsed = time.monotonic() - self._t0
        return self._samples / elapsed if elapsed > 0 else 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.min_interval

    def write(self, *, step: int, epoch: int, loss: float | None, force: bool = False) -> dict[str, Any] | None:
        if not force and not self.due():
            return None
        self._last = time.monotonic()
        record = {
            "step": step, "totalSteps": self.total_steps, "epoch": epoch,
            "loss": None if loss is None else round(float(loss), 6),
            "samplesPerSecond": round(self.throughput(), 3),
            "updatedAt": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resumes": self.resumes,
        }
        try:
            self.storage.put_json(self.uri, record)
        except Exception:  # noqa: BLE001 - progress is advisory: never fail training over it
            return None
        return record
