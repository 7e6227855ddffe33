"""Lineage queries: walk OpenLineage events back from a job to its sources.

An event's input digest is joined to the event whose outputs carry the same
digest (the producer). Inputs nobody produced are leaves: the Dataset's source
objects, annotation files. When several events produced a digest, the latest
one not after the consumer's eventTime wins.

:func:`chain` returns a JSON-friendly tree::

    {"job": "deployment/iris", "runId", "eventTime", "eventUri",
     "inputs": [{"uri", "digest", "producer": <node> | None, "repeated": bool}]}

A producer already shown elsewhere in the tree is given once in full; later
references carry ``"repeated": true`` and a node without ``inputs``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .openlineage import dataset_digest, dataset_uri


class LineageError(Exception):
    pass


def load_events(storage, namespace: str, bucket: str | None = None) -> list[dict[str, Any]]:
    """All RunEvents under ``s3://<bucket>/<namespace>/lineage/`` (each with ``_uri`` added)."""
    bucket = bucket or storage.bucket
    events = []
    for obj in storage.list(f"s3://{bucket}/{namespace}/lineage/"):
        if not obj.key.endswith(".json"):
            continue
        event = storage.get_json(obj.uri)
        if isinstance(event, dict) and "job" in event:
            event["_uri"] = obj.uri
            events.append(event)
    return events


def job_name(event: Mapping[str, Any]) -> str:
    return (event.get("job") or {}).get("name", "")


def _time(event: Mapping[str, Any]) -> str:
    return event.get("eventTime") or ""


def _completed(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in events if e.get("eventType", "COMPLETE") == "COMPLETE"]


def latest_event(events: Iterable[Mapping[str, Any]], job: str) -> Mapping[str, Any] | None:
    matching = [e for e in _completed(events) if job_name(e) == job]
    return max(matching, key=_time) if matching else None


def _producers(events: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_digest: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        for out in e.get("outputs") or []:
            d = dataset_digest(out)
            if d:
                by_digest.setdefault(d, []).append(e)
    return by_digest


def _pick(candidates: list[Mapping[str, Any]], consumer: Mapping[str, Any]) -> Mapping[str, Any] | None:
    candidates = [c for c in candidates if c is not consumer]
    if not candidates:
        return None
    before = [c for c in candidates if _time(c) <= _time(consumer)]
    return max(before or candidates, key=_time)


def chain(events: Iterable[Mapping[str, Any]], start_job: str) -> dict[str, Any]:
    """The lineage tree from the latest completed event of ``start_job``
    (e.g. ``"deployment/iris"``) back to the inputs nobody produced."""
    events = _completed(events)
    start = latest_event(events, start_job)
    if start is None:
        raise LineageError(f"no lineage events for {start_job}")
    producers = _producers(events)
    shown: set[str] = set()

    def node(event: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        rid = (event.get("run") or {}).get("runId", "")
        out: dict[str, Any] = {"job": job_name(event), "runId": rid, "eventTime": _time(event)}
        if event.get("_uri"):
            out["eventUri"] = event["_uri"]
        if rid in shown:
            out["repeated"] = True
            return out
        shown.add(rid)
        inputs = []
        for ds in event.get("inputs") or []:
            digest = dataset_digest(ds)
            entry: dict[str, Any] = {"uri": dataset_uri(ds), "digest": digest, "producer": None}
            producer = _pick(producers.get(digest, []), event) if digest else None
            if producer is not None:
                prid = (producer.get("run") or {}).get("runId", "")
                if prid in path:  # a cycle: never walk it
                    entry["cycle"] = True
                else:
                    entry["producer"] = node(producer, path + (rid,))
            inputs.append(entry)
        out["inputs"] = inputs
        return out

    return node(start, ())


def sources(tree: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The leaves of a chain: inputs no event produced (deduplicated, in order)."""
    seen, out = set(), []

    def walk(n: Mapping[str, Any]) -> None:
        for inp in n.get("inputs") or []:
            if inp.get("producer"):
                walk(inp["producer"])
            elif (inp["uri"], inp.get("digest")) not in seen:
                seen.add((inp["uri"], inp.get("digest")))
                out.append({"uri": inp["uri"], "digest": inp.get("digest")})

    walk(tree)
    return out


def short(digest: str | None, n: int = 12) -> str:
    if not digest:
        return "(no digest)"
    return digest[: len("sha256:") + n] if digest.startswith("sha256:") else digest[:n]


def format_chain(tree: Mapping[str, Any], full_digests: bool = False) -> str:
    """A text tree, e.g.::

        deployment/iris  run 1f2e…  2026-01-01T00:00:00Z
        └── s3://loom/ns/trainingruns/iris/model.onnx  sha256:abc…
            └── trainingrun/iris  run …
    """
    fmt = (lambda d: d or "(no digest)") if full_digests else short
    lines: list[str] = []

    def job_line(n: Mapping[str, Any]) -> str:
        text = f"{n['job']}  run {n.get('runId', '')[:8]}  {n.get('eventTime', '')}".rstrip()
        return text + ("  (see above)" if n.get("repeated") else "")

    def walk(n: Mapping[str, Any], prefix: str) -> None:
        inputs = n.get("inputs") or []
        for i, inp in enumerate(inputs):
            last = i == len(inputs) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{inp['uri']}  {fmt(inp.get('digest'))}"
                         + ("  (cycle)" if inp.get("cycle") else "")
                         + ("" if inp.get("producer") or inp.get("cycle") else "  [source]"))
            child_prefix = prefix + ("    " if last else "│   ")
            if inp.get("producer"):
                lines.append(f"{child_prefix}└── {job_line(inp['producer'])}")
                walk(inp["producer"], child_prefix + "    ")

    lines.append(job_line(tree))
    walk(tree, "")
    return "\n".join(lines)
