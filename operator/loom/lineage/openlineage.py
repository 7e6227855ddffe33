"""OpenLineage RunEvents for Loom steps.

Datasets are named by URI (namespace = the URI's scheme and bucket, name = the
key) and carry a facet ``loom_digest: {"digest": "sha256:..."}``. The job is
``{"namespace": "loom://<ns>", "name": "<kind>/<name>"}``. Events live at
``s3://<bucket>/<ns>/lineage/<kind>/<name>/<runId>.json``.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any, Iterable, Mapping

PRODUCER = "https://github.com/loom-dev/loom"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"
FACET_SCHEMA_URL = "https://loom.dev/spec/facets/1-0-0/LoomDigestFacet.json"
RUN_NAMESPACE = uuid.UUID("6f1d3c52-4a8e-4f0b-9c57-1b2a3e4d5c6f")

DatasetRef = Mapping[str, Any]  # {"uri", "digest", optional "facets"}


def run_id(seed: str | None = None) -> str:
    """A UUID: deterministic (uuid5) from ``seed`` when given, else random."""
    return str(uuid.uuid5(RUN_NAMESPACE, seed) if seed else uuid.uuid4())


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _split_uri(uri: str) -> tuple[str, str]:
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        bucket, _, key = rest.partition("/")
        return f"{scheme}://{bucket}", key
    return "loom", uri


def dataset(uri: str, digest: str | None = None, facets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    namespace, name = _split_uri(uri)
    out_facets: dict[str, Any] = dict(facets or {})
    if digest:
        out_facets["loom_digest"] = {"_producer": PRODUCER, "_schemaURL": FACET_SCHEMA_URL, "digest": digest}
    return {"namespace": namespace, "name": name, "facets": out_facets}


def dataset_uri(ds: Mapping[str, Any]) -> str:
    ns, name = ds.get("namespace", ""), ds.get("name", "")
    return f"{ns}/{name}" if "://" in ns else name


def dataset_digest(ds: Mapping[str, Any]) -> str | None:
    return ((ds.get("facets") or {}).get("loom_digest") or {}).get("digest")


def _datasets(refs: Iterable[DatasetRef]) -> list[dict[str, Any]]:
    return [dataset(r["uri"], r.get("digest"), r.get("facets")) for r in refs]


def build_event(
    namespace: str,
    kind: str,
    name: str,
    inputs: Iterable[DatasetRef] = (),
    outputs: Iterable[DatasetRef] = (),
    *,
    event_type: str = "COMPLETE",
    run_seed: str | None = None,
    run_facets: Mapping[str, Any] | None = None,
    job_facets: Mapping[str, Any] | None = None,
    event_time: str | None = None,
) -> dict[str, Any]:
    """An OpenLineage RunEvent dict. ``kind`` is lower-case (``dataset``,
    ``labeljob``, ``trainingrun``, ``evaluation``, ``deployment``)."""
    return {
        "eventType": event_type,
        "eventTime": event_time or now(),
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
        "run": {"runId": run_id(run_seed), "facets": dict(run_facets or {})},
        "job": {"namespace": f"loom://{namespace}", "name": f"{kind.lower()}/{name}",
                "facets": dict(job_facets or {})},
        "inputs": _datasets(inputs),
        "outputs": _datasets(outputs),
    }


def event_uri(bucket: str, ns: str, kind: str, name: str, run: str) -> str:
    return f"s3://{bucket}/{ns}/lineage/{kind.lower()}/{name}/{run}.json"


def write_event(storage, bucket: str | None, ns: str, kind: str, name: str, event: Mapping[str, Any]) -> str:
    """Write ``event`` to ``s3://<bucket>/<ns>/lineage/<kind>/<name>/<runId>.json``; returns the URI."""
    uri = event_uri(bucket or storage.bucket, ns, kind, name, event["run"]["runId"])
    storage.put_json(uri, dict(event))
    return uri
