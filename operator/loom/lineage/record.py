"""Writes a planner's LineageRecord as an OpenLineage RunEvent, and reads chains back."""
from __future__ import annotations

from typing import Any

from loom.lineage.graph import chain, format_chain, load_events
from loom.lineage.openlineage import build_event, write_event


def write(storage: Any, bucket: str, namespace: str, record: Any) -> str:
    # The run id is derived from the record's key: a rewrite after a restart replaces, never duplicates.
    event = build_event(
        namespace, record.kind, record.name, record.inputs, record.outputs,
        run_seed=f"{namespace}/{record.kind}/{record.name}/{record.run_key}",
        run_facets={"loom": record.facets} if record.facets else None,
    )
    return write_event(storage, bucket, namespace, record.kind, record.name, event)


def format_lineage(storage: Any, bucket: str, namespace: str, start: str, full_digests: bool = False) -> str:
    """The chain from `start` ("deployment/NAME") back to the Dataset's sources, as text."""
    return format_chain(chain(load_events(storage, namespace, bucket), start.lower()), full_digests=full_digests)
