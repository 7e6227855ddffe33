"""Dataset ingest: fetch and hash the sources, check them, split them, publish a version.

1. Every source object (S3 object, every object under an S3 prefix, or an
   HTTP(S) URL) is streamed to a local file and hashed in the same pass
   (constant memory), then read as CSV, JSON Lines or Parquet (``formats``).
2. The declared schema is checked (``schema``); exact duplicate rows are
   removed by row hash and counted.
3. Rows are split by ``split.strategy`` (``splits``): random, stratified, group
   or time; a frozen test split from another Dataset replaces the test part.
   The leakage report must be zero for group and time splits.
4. Drift against the baseline version (``drift``), then the data report and
   data card (``datacard``).
5. Only when every check has passed is anything written: the split CSVs and
   ``manifest.json`` under ``<outputPrefix>/<hex of version>/``, the report and
   the card beside them. The version is the sha256 of the canonical manifest
   (sources, object digests, columns, schema, split settings, split digests),
   so the same sources and settings always give the same version.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ..backends.storage import Storage, StorageError, make_uri, parse_uri
from ..lineage.digest import hex_of, manifest_digest, sha256_bytes
from . import datacard, drift, schema as schema_mod, splits as splits_mod
from ._task import SPLITS, join_uri, parse_csv, require, run, to_csv_bytes
from .dataerrors import DataError
from .formats import FORMATS, read_frame
from .hashing import copy_hashing, http_chunks

log = logging.getLogger("loom.workloads.ingest")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def resolve_sources(storage: Storage, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expand each source (an object, an ``s3://.../`` prefix or a URL) into objects, in a stable order."""
    objects: list[dict[str, Any]] = []
    for i, src in enumerate(sources):
        uri = require(src, "uri", f"sources[{i}]")
        fmt = src.get("format", "csv")
        if fmt not in FORMATS:
            raise DataError("UnsupportedFormat", f"sources[{i}]: unsupported format {fmt!r} (supported: {', '.join(FORMATS)})")
        if is_http(uri):
            objects.append({"uri": uri, "source": i, "format": fmt})
            continue
        bucket, key = parse_uri(uri)
        if key == "" or key.endswith("/"):
            found = [o for o in storage.list(uri) if not o.key.endswith("/")]
            if not found:
                raise DataError("SourceNotFound", f"no objects under prefix {uri}")
            objects.extend({"uri": o.uri, "source": i, "format": fmt} for o in found)
        else:
            if not storage.exists(uri):
                raise DataError("SourceNotFound", f"source object not found: {uri}")
            objects.append({"uri": make_uri(bucket, key), "source": i, "format": fmt})
    seen: set[str] = set()
    unique = []
    for o in objects:
        if o["uri"] not in seen:
            seen.add(o["uri"])
            unique.append(o)
    return unique


def fetch(storage: Storage, uri: str, dest: Path) -> tuple[str, int]:
    """Copy one object to ``dest`` while hashing it (one streamed pass): (digest, bytes)."""
    chunks = http_chunks(uri) if is_http(uri) else storage.iter_chunks(uri)
    try:
        return copy_hashing(chunks, dest)
    except StorageError as exc:
        raise DataError("SourceUnreadable", str(exc)) from exc


def read_sources(storage: Storage, objects: list[dict[str, Any]], id_col: str,
                 label_col: str | None) -> tuple[pd.DataFrame, list[str]]:
    frames: list[pd.DataFrame] = []
    columns: list[str] | None = None
    with tempfile.TemporaryDirectory(prefix="loom-ingest-") as tmp:
        for n, obj in enumerate(objects):
            path = Path(tmp) / f"{n}.{obj['format']}"
            obj["digest"], obj["bytes"] = fetch(storage, obj["uri"], path)
            df = read_frame(path, obj["format"], obj["uri"])
            path.unlink()
            if id_col not in df.columns:
                raise DataError("MissingColumn", f"id column '{id_col}' not found in {obj['uri']} "
                                                 f"(columns: {', '.join(df.columns)})")
            if label_col and label_col not in df.columns:
                raise DataError("MissingColumn", f"label column '{label_col}' not found in {obj['uri']}")
            if columns is None:
                columns = list(df.columns)
            elif set(df.columns) != set(columns):
                raise DataError("MalformedInput", f"columns of {obj['uri']} ({', '.join(df.columns)}) differ from "
                                                  f"the first source ({', '.join(columns)})")
            frames.append(df[columns])
    assert columns is not None
    return pd.concat(frames, ignore_index=True), columns


def read_reference_rows(storage: Storage, refs: dict[str, Any], what: str) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """Rows of published split files (digests checked), as text cells; and their bytes."""
    frames, blobs = [], {}
    for name, ref in refs.items():
        uri = require(ref, "uri", f"{what}.{name}")
        data = storage.get_bytes(uri)
        if ref.get("digest") and sha256_bytes(data) != ref["digest"]:
            raise DataError("DigestMismatch", f"{what} {name} split {uri} has digest {sha256_bytes(data)}, "
                                              f"expected {ref['digest']}")
        df = parse_csv(data, uri)
        frames.append(df.astype(object).where(df.notna(), None))
        blobs[name] = data
    return pd.concat(frames, ignore_index=True), blobs


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any]:
    sources = require(task, "sources")
    output_prefix = require(task, "outputPrefix")
    id_col = task.get("idColumn") or "id"
    label_col = task.get("labelColumn") or None
    declared = list(task.get("schema") or [])
    split = dict(task.get("split") or {})
    split.setdefault("strategy", "random")
    strategy = split["strategy"]

    # 1. fetch, hash, read
    objects = resolve_sources(storage, sources)
    data, columns = read_sources(storage, objects, id_col, label_col)
    rows_read = len(data)
    if rows_read == 0:
        raise DataError("EmptyDataset", "the sources contain no rows")

    # 2. schema, duplicates, ids
    schema_mod.check(data, declared)
    data, duplicates = splits_mod.drop_duplicates(data) if task.get("deduplicate", True) else (data, 0)
    if data[id_col].isna().any():
        raise DataError("SchemaViolation", f"id column '{id_col}': {int(data[id_col].isna().sum())} rows have no id")
    dupes = data[id_col][data[id_col].duplicated()].unique().tolist()
    if dupes:
        shown = ", ".join(map(str, dupes[:5])) + (", …" if len(dupes) > 5 else "")
        raise DataError("DuplicateId", f"{len(dupes)} duplicate id(s) in column '{id_col}' with different "
                                       f"values in other columns: {shown}")

    # 3. splits and leakage
    frozen = task.get("frozenTest") or None
    frozen_rows, frozen_bytes = None, None
    if frozen:
        frozen_rows, blobs = read_reference_rows(storage, {"test": frozen}, "frozen test")
        frozen_bytes = blobs["test"]
        if set(frozen_rows.columns) != set(columns):
            raise DataError("FrozenTestMismatch", f"the frozen test split {frozen['uri']} has columns "
                                                  f"{', '.join(frozen_rows.columns)}, this data has {', '.join(columns)}")
        frozen_rows = frozen_rows[columns]
    parts, excluded = splits_mod.assign(data, split, id_col, label_col, frozen_rows)
    entity_col = split.get("groupColumn") if strategy == "group" else id_col
    leak = splits_mod.leakage(parts, entity_col, split.get("timeColumn") if strategy == "time" else None)
    splits_mod.check_leakage(leak, strategy)
    published = pd.concat([parts[n] for n in SPLITS], ignore_index=True)  # the frozen test's rows included

    # 4. drift and the report
    types = schema_mod.column_types(data, declared)
    drift_figures = None
    baseline = task.get("baseline") or None
    if baseline and baseline.get("splits"):
        base_rows, _ = read_reference_rows(storage, baseline["splits"], "baseline")
        skip = {id_col} | {c for c in (split.get("groupColumn"), split.get("timeColumn")) if c}
        drift_figures = {"baselineVersion": baseline.get("version"), "baselineFrom": baseline.get("name"),
                         **drift.compare(base_rows, data, types, skip, task.get("drift"))}
        if drift_figures["detected"] and (task.get("drift") or {}).get("failOnDrift"):
            raise DataError("DriftDetected", drift_summary_message(drift_figures))
    report = datacard.data_report(published, types, rows_read, duplicates, excluded)

    # 5. publish: everything is computed; now write
    blobs = {name: to_csv_bytes(parts[name]) for name in SPLITS}
    if frozen_bytes is not None:
        blobs["test"] = frozen_bytes  # the very bytes, so the digest is the frozen one
    manifest = {
        "kind": "DatasetManifest",
        "apiVersion": "loom.dev/v1alpha1",
        "sources": [{"uri": s["uri"], "format": s.get("format", "csv"), "provenance": s.get("provenance") or {}}
                    for s in sources],
        "objects": [{"uri": o["uri"], "digest": o["digest"], "bytes": o["bytes"]} for o in objects],
        "idColumn": id_col,
        "labelColumn": label_col,
        "columns": columns,
        "schema": declared,
        "rows": int(sum(len(parts[n]) for n in SPLITS)),
        "split": split,
        "splits": {n: {"digest": sha256_bytes(b), "rows": int(len(parts[n]))} for n, b in blobs.items()},
    }
    if frozen:
        manifest["frozenTest"] = {"digest": frozen["digest"], "from": frozen.get("from")}
    version = manifest_digest(manifest)
    base = join_uri(output_prefix, hex_of(version))
    refs = {n: {"uri": join_uri(base, f"{n}.csv"), **manifest["splits"][n]} for n in SPLITS}
    frozen_ref = {**refs["test"], "from": frozen.get("from") or task.get("name")} if frozen else \
        {**refs["test"], "from": task.get("name")}
    card = datacard.data_card(
        name=task.get("name", ""), namespace=task.get("namespace", ""), version=version, sources=sources,
        objects=manifest["objects"], schema=declared, report=report, split=split, splits=refs,
        leakage=leak, drift=drift_figures, frozen_test=frozen_ref if frozen else None)
    card_json = datacard_bytes(card)
    card_md = datacard.markdown(card).encode("utf-8")
    report_json = datacard_bytes(report)
    card_dir = join_uri(base, "cards", hex_of(sha256_bytes(card_json))[:16])

    for name in SPLITS:
        storage.put_bytes(refs[name]["uri"], blobs[name], content_type="text/csv")
    manifest_uri = join_uri(base, "manifest.json")
    storage.put_json(manifest_uri, manifest)
    report_uri, card_uri, md_uri = (join_uri(card_dir, f) for f in ("report.json", "datacard.json", "datacard.md"))
    storage.put_bytes(report_uri, report_json, content_type="application/json")
    storage.put_bytes(card_uri, card_json, content_type="application/json")
    storage.put_bytes(md_uri, card_md, content_type="text/markdown")
    log.info("dataset version %s: %d rows read, %d duplicates, splits %s", version, rows_read, duplicates,
             {n: len(parts[n]) for n in SPLITS})
    return {
        "version": version,
        "manifestUri": manifest_uri,
        "objects": manifest["objects"],
        "rows": manifest["rows"],
        "columns": columns,
        "splits": refs,
        "rowsRead": rows_read,
        "duplicatesRemoved": duplicates,
        "excludedRows": excluded,
        "nulls": report["nulls"],
        "report": {"uri": report_uri, "digest": sha256_bytes(report_json)},
        "dataCard": {"uri": card_uri, "digest": sha256_bytes(card_json), "markdownUri": md_uri,
                     "markdownDigest": sha256_bytes(card_md)},
        "leakage": {k: leak[k] for k in ("entityColumn", "entityOverlap", "rowOverlap", "timeOrderViolations") if k in leak},
        "drift": drift_summary(drift_figures),
        "frozenTest": frozen_ref,
    }


def datacard_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def drift_summary(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of the drift report that goes into status."""
    if not figures:
        return None
    psis = [c["psi"] for c in figures["columns"] if c.get("psi") is not None]
    return {"baselineVersion": figures.get("baselineVersion"), "detected": figures["detected"],
            "driftedColumns": figures["driftedColumns"], "maxPsi": max(psis) if psis else None,
            "message": drift_summary_message(figures)}


def drift_summary_message(figures: dict[str, Any]) -> str:
    if not figures["detected"]:
        return f"no drift against {str(figures.get('baselineVersion'))[:19]} ({len(figures['columns'])} columns compared)"
    parts = [f"{c['column']} ({'; '.join(c['crossed'])})" for c in figures["columns"] if c["drifted"]]
    return f"drift against {str(figures.get('baselineVersion'))[:19]} in {len(parts)} column(s): " + ", ".join(parts)


if __name__ == "__main__":
    run(main)
