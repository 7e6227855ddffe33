"""Training checkpoints in object storage, and resuming from the latest one.

Layout under the run's output prefix::

    checkpoints/step-000000040.pt   torch.save of the state (model, optimizer, RNG, step, epoch, ...)
    checkpoints/latest.json         {"latest": record, "checkpoints": [record, ...]}

A record is ``{"uri", "digest", "step", "epoch", "savedAt"}``. The checkpoint file is
written before ``latest.json`` points at it, so a crash between the two leaves the
previous checkpoint in charge. Only rank 0 writes; every rank reads the same one on
resume, so the gang restarts in step. Loading uses ``weights_only=True``: a file in
storage never runs code.
"""
from __future__ import annotations

import datetime
import io
import random
from typing import Any

import numpy as np

from ..lineage.digest import sha256_bytes
from ._task import WorkloadError, join_uri

LATEST = "checkpoints/latest.json"


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer uses, in types torch.load(weights_only=True) accepts."""
    import torch

    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": list(_flatten_python_state(random.getstate())),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _flatten_python_state(st: tuple) -> list:
    version, internal, gauss = st
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves and finds checkpoints under ``prefix`` (the run's output prefix)."""

    def __init__(self, storage: Any, prefix: str, every_steps: int, keep: int = 2) -> None:
        if every_steps < 1 or keep < 1:
            raise WorkloadError("checkpoint.everySteps and checkpoint.keep must be >= 1")
        self.storage = storage
        self.prefix = prefix
        self.every_steps = every_steps
        self.keep = keep
        self.records: list[dict[str, Any]] = []  # kept checkpoints, oldest first
        self.last_step: int | None = None

    @property
    def latest_uri(self) -> str:
        return join_uri(self.prefix, LATEST)

    def due(self, step: int) -> bool:
        return step % self.every_steps == 0

    def save(self, state: dict[str, Any]) -> dict[str, Any]:
        import torch

        step = int(state["step"])
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        uri = join_uri(self.prefix, f"checkpoints/step-{step:09d}.pt")
        self.storage.put_bytes(uri, data)
        record = {"uri": uri, "digest": sha256_bytes(data), "step": step, "epoch": int(state["epoch"]),
                  "savedAt": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.records = [r for r in self.records if r["step"] != step] + [record]
        dropped, self.records = self.records[:-self.keep], self.records[-self.keep:]
        self.storage.put_json(self.latest_uri, {"latest": record, "checkpoints": self.records})
        for old in dropped:  # after latest.json moved on: never delete what it points at
            try:
                self.storage.delete(old["uri"])
            except Exception:  # noqa: BLE001 - a leftover file is harmless
                pass
        self.last_step = step
        return record

    def load_latest(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(state, record) of the latest checkpoint, or None when the run has none yet."""
        import torch

        try:
            index = self.storage.get_json(self.latest_uri)
        except Exception:  # noqa: BLE001 - no checkpoint yet: a fresh start
            if not self._exists(self.latest_uri):
                return None
            raise
        record = index["latest"]
        self.records = list(index.get("checkpoints") or [record])
        data = self.storage.get_bytes(record["uri"])
        if sha256_bytes(data) != record["digest"]:
            raise WorkloadError(f"checkpoint {record['uri']} does not match its digest {record['digest']}")
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self.last_step = int(state["step"])
        return state, record

    def _exists(self, uri: str) -> bool:
        try:
            return bool(self.storage.exists(uri))
        except Exception:  # noqa: BLE001
            return False
