"""Shared plumbing for the workloads: read LOOM_TASK, write the result, errors.

A workload's ``main(task, storage) -> dict | None`` does the work. :func:`run`
writes the returned dict to ``task["resultUri"]`` and exits 0; on any error it
logs the traceback to stderr, writes ``{"error": "<one line>"}`` to the
``resultUri`` and exits 1. A result of ``None`` writes nothing (DDP ranks > 0).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable

import pandas as pd

from ..backends.storage import Storage, StorageError
from ..lineage.digest import hex_of, manifest_digest, sha256_bytes

log = logging.getLogger("loom.workloads")
MAX_MESSAGE = 500


class WorkloadError(Exception):
    """An expected failure with a message fit for a status condition.

    ``reason`` (optional, CamelCase) is written beside the error so the planner
    can give the Failed condition a specific reason."""

    def __init__(self, message: str = "", reason: str | None = None):
        super().__init__(message)
        self.reason = reason


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_message(exc: BaseException) -> str:
    if isinstance(exc, (WorkloadError, StorageError)):
        return one_line(str(exc))
    return one_line(f"{type(exc).__name__}: {exc}")


def load_task(env: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    raw = env.get("LOOM_TASK")
    if not raw:
        raise WorkloadError("LOOM_TASK is not set")
    try:
        task = json.loads(raw)
    except ValueError as exc:
        raise WorkloadError(f"LOOM_TASK is not valid JSON: {exc}") from exc
    if not isinstance(task, dict):
        raise WorkloadError("LOOM_TASK must be a JSON object")
    return task


def require(obj: dict[str, Any], key: str, where: str = "task") -> Any:
    if not isinstance(obj, dict) or obj.get(key) in (None, ""):
        raise WorkloadError(f"{where}.{key} is required")
    return obj[key]


def execute(main: Callable[[dict, Storage], dict | None], task: dict[str, Any],
            storage: Storage, publish_errors: bool = True) -> tuple[int, dict | None]:
    """Run ``main`` and publish its result or error; returns (exit code, result).

    ``publish_errors=False`` (DDP ranks > 0) logs errors without writing them,
    so only rank 0 ever writes ``resultUri``.
    """
    result_uri = task.get("resultUri")
    try:
        if not result_uri:
            raise WorkloadError("task.resultUri is required")
        result = main(task, storage)
    except BaseException as exc:  # noqa: BLE001 - everything becomes a one-line error
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc(file=sys.stderr)
        error = {"error": error_message(exc)}
        if getattr(exc, "reason", None):  # a WorkloadError/DataError: the condition reason
            error["reason"] = exc.reason
        if result_uri and publish_errors:
            try:
                storage.put_json(result_uri, error)
            except Exception:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)
        print(f"loom: {error['error']}", file=sys.stderr)
        return 1, error
    if result is not None:
        storage.put_json(result_uri, result)
    return 0, result


def run(main: Callable[[dict, Storage], dict | None], rank_zero_writes: bool = False) -> None:
    """Entry point for ``python -m loom.workloads.<step>``: never returns.

    ``rank_zero_writes``: only the process with env RANK 0 (or unset) writes errors.
    """
    logging.basicConfig(level=os.environ.get("LOOM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        task = load_task()
        storage = Storage.from_env()
    except (WorkloadError, StorageError) as exc:
        # no task means no resultUri to write to: stderr is all we have
        print(f"loom: {error_message(exc)}", file=sys.stderr)
        sys.exit(1)
    publish = not rank_zero_writes or int(os.environ.get("RANK") or 0) == 0
    code, _ = execute(main, task, storage, publish_errors=publish)
    sys.exit(code)


# -- CSV helpers shared by the steps ----------------------------------------

def parse_csv(data: bytes, uri: str) -> pd.DataFrame:
    if not data.strip():
        raise WorkloadError(f"empty CSV: {uri}")
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"malformed CSV {uri}: {one_line(str(exc), 200)}") from exc
    header = next(csv.reader(io.StringIO(data.decode("utf-8", errors="replace").splitlines()[0])), [])
    if any(not h.strip() for h in header):
        raise WorkloadError(f"malformed CSV {uri}: empty column name in header")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise WorkloadError(f"malformed CSV {uri}: duplicate column names {dupes}")
    return df


def numeric_columns(df: pd.DataFrame, exclude: set[str]) -> list[str]:
    """Columns (in order) whose every value parses as a number."""
    cols = []
    for c in df.columns:
        if c in exclude:
            continue
        values = pd.to_numeric(df[c], errors="coerce")
        if len(df) and values.notna().all():
            cols.append(c)
    return cols


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode("utf-8")


def read_split(storage: Storage, ref: dict[str, Any], name: str, verify: bool = True) -> pd.DataFrame:
    """Read a split reference; checks its digest when the reference has one."""
    uri = require(ref, "uri", f"splits.{name}")
    data = storage.get_bytes(uri)
    expected = ref.get("digest")
    if verify and expected:
        actual = sha256_bytes(data)
        if actual != expected:
            raise WorkloadError(f"{name} split digest mismatch: {uri} has {actual}, expected {expected}")
    return parse_csv(data, uri)


SPLITS = ("train", "validation", "test")


def publish_version(storage: Storage, output_prefix: str, manifest: dict[str, Any],
                    frames: dict[str, pd.DataFrame]) -> tuple[str, str, dict[str, dict[str, Any]]]:
    """Publish split CSVs under a content-addressed version.

    The manifest gains each split's digest and row count; its canonical digest is
    the version, and everything goes under ``<outputPrefix>/<hex of version>/``.
    Returns (version, manifest URI, split references ``{uri, digest, rows}``).
    """
    data = {name: to_csv_bytes(frames[name]) for name in SPLITS}
    manifest = {**manifest, "splits": {n: {"digest": sha256_bytes(b), "rows": int(len(frames[n]))} for n, b in data.items()}}
    version = manifest_digest(manifest)
    base = join_uri(output_prefix, hex_of(version))
    refs = {}
    for name in SPLITS:
        uri = join_uri(base, f"{name}.csv")
        storage.put_bytes(uri, data[name], content_type="text/csv")
        refs[name] = {"uri": uri, **manifest["splits"][name]}
    manifest_uri = join_uri(base, "manifest.json")
    storage.put_json(manifest_uri, manifest)
    return version, manifest_uri, refs


def join_uri(prefix: str, *parts: str) -> str:
    return prefix.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)
