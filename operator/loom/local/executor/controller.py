"""What the three local controllers share: one run per listed object.

Each pass lists the objects; a new object gets a run, an object deleted (or
deleted and created again under the same name) has its run forgotten, and every
run is ticked with the object's latest state.
"""
from __future__ import annotations

import logging
from typing import Any

from .kube import Obj
from .pods import SpecError

log = logging.getLogger("loom.local.executor")


class RunController:
    resource: Any = None  # the kube resource listed each pass
    label = "object"

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], Any] = {}

    def new_run(self, obj: Obj) -> Any:
        raise NotImplementedError

    def on_new(self, run: Any) -> None:
        """A hook for a run seen for the first time (e.g. clean up after an earlier executor)."""

    def on_invalid(self, run: Any, obj: Obj, error: SpecError) -> None:
        """A spec the controller cannot run: mark the object failed, as the real one would."""
        log.warning("%s %s/%s: %s", self.label, run.namespace, run.name, error)

    def forget(self, key: tuple[str, str]) -> None:
        raise NotImplementedError

    def reconcile(self) -> None:
        seen: set[tuple[str, str]] = set()
        for obj in self.kube.list(self.resource):
            meta = obj.get("metadata") or {}
            if not meta.get("name"):
                continue
            key = (meta.get("namespace") or "default", meta["name"])
            seen.add(key)
            run = self.runs.get(key)
            if run is not None and run.uid != (meta.get("uid") or ""):
                self.forget(key)  # deleted and created again under the same name
                run = None
            if run is None:
                run = self.runs[key] = self.new_run(obj)
                self.on_new(run)
            try:
                run.tick(obj)
            except SpecError as e:
                self.on_invalid(run, obj, e)
            except Exception:
                log.exception("%s %s/%s: reconcile failed (will retry)", self.label, *key)
        for key in list(self.runs):
            if key not in seen:
                self.forget(key)
