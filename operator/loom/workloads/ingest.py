"""Dataset ingest: hash the sources, build the manifest (its digest is the
version), split rows with a seeded random permutation, publish splits.

Rows are ordered by id before the permutation, so the split depends only on the
content and the split settings, not on source order. Split sizes: train =
round(n * train), validation = round(n * validation), test = the rest.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backends.storage import Storage, make_uri, parse_uri
from ..lineage.digest import sha256_file
from ._task import SPLITS, WorkloadError, parse_csv, publish_version, require, run

log = logging.getLogger("loom.workloads.ingest")
DEFAULT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


def resolve_sources(storage: Storage, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expand each source (an object or a ``.../`` prefix) into objects, in a stable order."""
    objects: list[dict[str, Any]] = []
    for i, src in enumerate(sources):
        uri = require(src, "uri", f"sources[{i}]")
        fmt = src.get("format", "csv")
        if fmt != "csv":
            raise WorkloadError(f"sources[{i}]: unsupported format {fmt!r} (only csv)")
        bucket, key = parse_uri(uri)
        if key == "" or key.endswith("/"):
            found = [o for o in storage.list(uri) if not o.key.endswith("/")]
            if not found:
                raise WorkloadError(f"no objects under prefix {uri}")
            objects.extend({"uri": o.uri, "source": i} for o in found)
        else:
            if not storage.exists(uri):
                raise WorkloadError(f"source object not found: {uri}")
            objects.append({"uri": make_uri(bucket, key), "source": i})
    seen: set[str] = set()
    unique = []
    for o in objects:
        if o["uri"] not in seen:
            seen.add(o["uri"])
            unique.append(o)
    return unique


def split_sizes(n: int, split: dict[str, Any]) -> dict[str, int]:
    fractions = {s: float(split.get(s, DEFAULT_FRACTIONS[s])) for s in SPLITS}
    if any(f < 0 or f > 1 for f in fractions.values()):
        raise WorkloadError(f"split fractions must be between 0 and 1, got {fractions}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise WorkloadError(f"split fractions must sum to 1, got {sum(fractions.values()):.4f}")
    n_train = int(round(n * fractions["train"]))
    n_val = min(int(round(n * fractions["validation"])), n - n_train)
    sizes = {"train": n_train, "validation": n_val, "test": n - n_train - n_val}
    for name, size in sizes.items():
        if size == 0:
            raise WorkloadError(
                f"split '{name}' would be empty ({n} rows, fraction {fractions[name]:g}); "
                "add data or change the split fractions"
            )
    return sizes


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any]:
    sources = require(task, "sources")
    output_prefix = require(task, "outputPrefix")
    id_col = task.get("idColumn") or "id"
    label_col = task.get("labelColumn") or None
    split = dict(task.get("split") or {})
    strategy = split.get("strategy", "random")
    if strategy != "random":
        raise WorkloadError(f"unsupported split strategy {strategy!r} (only random)")
    seed = int(split.get("seed", 42))

    objects = resolve_sources(storage, sources)
    frames = []
    columns: list[str] | None = None
    with tempfile.TemporaryDirectory(prefix="loom-ingest-") as tmp:
        for n, obj in enumerate(objects):
            path = storage.get_file(obj["uri"], Path(tmp) / f"{n}.csv")
            obj["digest"] = sha256_file(path)
            obj["bytes"] = path.stat().st_size
            df = parse_csv(path.read_bytes(), obj["uri"])
            if id_col not in df.columns:
                raise WorkloadError(f"id column '{id_col}' not found in {obj['uri']} (columns: {', '.join(df.columns)})")
            if label_col and label_col not in df.columns:
                raise WorkloadError(f"label column '{label_col}' not found in {obj['uri']}")
            if columns is None:
                columns = list(df.columns)
            elif list(df.columns) != columns:
                raise WorkloadError(
                    f"columns of {obj['uri']} ({', '.join(df.columns)}) differ from the first source ({', '.join(columns)})"
                )
            if df[id_col].isna().any():
                raise WorkloadError(f"empty id in {obj['uri']} (column '{id_col}')")
            frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    dupes = data[id_col][data[id_col].duplicated()].unique().tolist()
    if dupes:
        shown = ", ".join(map(str, dupes[:5])) + (", …" if len(dupes) > 5 else "")
        raise WorkloadError(f"{len(dupes)} duplicate id(s) in column '{id_col}': {shown}")
    if len(data) == 0:
        raise WorkloadError("the sources contain no rows")

    sizes = split_sizes(len(data), split)
    data = data.sort_values(id_col, kind="mergesort").reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(data))
    parts = {}
    start = 0
    for name in SPLITS:
        idx = np.sort(order[start:start + sizes[name]])  # keep id order inside a split
        parts[name] = data.iloc[idx]
        start += sizes[name]


    manifest = {
        "kind": "DatasetManifest",
        "apiVersion": "loom.dev/v1alpha1",
        "sources": [
            {"uri": s["uri"], "format": s.get("format", "csv"), "provenance": s.get("provenance") or {}}
            for s in sources
        ],
        "objects": [{"uri": o["uri"], "digest": o["digest"], "bytes": o["bytes"]} for o in objects],
        "idColumn": id_col,
        "labelColumn": label_col,
        "columns": columns,
        "rows": int(len(data)),
        "split": {"strategy": "random", "seed": seed,
                  **{s: float(split.get(s, DEFAULT_FRACTIONS[s])) for s in SPLITS}},
    }
    version, manifest_uri, refs = publish_version(storage, output_prefix, manifest, parts)
    log.info("dataset version %s: %d rows, splits %s", version, len(data), sizes)
    return {
        "version": version,
        "manifestUri": manifest_uri,
        "objects": manifest["objects"],
        "rows": manifest["rows"],
        "columns": columns,
        "splits": refs,
    }


if __name__ == "__main__":
    run(main)
