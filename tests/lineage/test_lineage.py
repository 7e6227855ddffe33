import uuid

import pytest

from loom.lineage import graph
from loom.lineage.digest import sha256_bytes
from loom.lineage.openlineage import build_event, dataset_digest, run_id, write_event


def d(s):
    return sha256_bytes(s.encode())


def synthetic(ns="team-a"):
    """A full chain Dataset -> LabelJob -> TrainingRun -> Evaluation -> Deployment, plus noise."""
    src = {"uri": "s3://raw/iris.csv", "digest": d("src")}
    ds_splits = {s: {"uri": f"s3://loom/{ns}/datasets/iris/v1/{s}.csv", "digest": d("ds-" + s)}
                 for s in ("train", "validation", "test")}
    lb_splits = {s: {"uri": f"s3://loom/{ns}/labeljobs/iris/v1/{s}.csv", "digest": d("lb-" + s)}
                 for s in ("train", "validation", "test")}
    ann = {"uri": "s3://raw/annotations.csv", "digest": d("ann")}
    model = {"uri": f"s3://loom/{ns}/trainingruns/iris/model.onnx", "digest": d("model")}
    report = {"uri": f"s3://loom/{ns}/results/evaluation-iris.json", "digest": d("report")}
    t = lambda m: f"2026-01-01T00:{m:02d}:00.000Z"  # noqa: E731
    return [
        build_event(ns, "dataset", "iris", [src], ds_splits.values(), run_seed="ds", event_time=t(1)),
        build_event(ns, "labeljob", "iris", [*ds_splits.values(), ann], lb_splits.values(),
                    run_seed="lb", event_time=t(2)),
        build_event(ns, "trainingrun", "iris", [lb_splits["train"], lb_splits["validation"]], [model],
                    run_seed="tr", event_time=t(3)),
        build_event(ns, "evaluation", "iris", [model, lb_splits["test"]], [report], run_seed="ev",
                    event_time=t(4)),
        build_event(ns, "deployment", "iris", [model, report], [], run_seed="dep", event_time=t(5)),
        # an unrelated, later run of another model
        build_event(ns, "trainingrun", "other", [lb_splits["train"]],
                    [{"uri": "s3://loom/x/other.onnx", "digest": d("other")}], run_seed="o", event_time=t(6)),
    ], src, ann


def test_event_shape():
    e = build_event("ns1", "TrainingRun", "iris", [{"uri": "s3://loom/ns1/a.csv", "digest": d("a")}], [],
                    run_seed="x")
    assert e["eventType"] == "COMPLETE" and e["eventTime"].endswith("Z")
    assert e["job"] == {"namespace": "loom://ns1", "name": "trainingrun/iris", "facets": {}}
    assert e["run"]["runId"] == run_id("x") == str(uuid.UUID(e["run"]["runId"]))
    assert e["inputs"][0]["namespace"] == "s3://loom" and e["inputs"][0]["name"] == "ns1/a.csv"
    assert dataset_digest(e["inputs"][0]) == d("a")
    assert e["producer"].startswith("https://") and e["schemaURL"].startswith("https://openlineage.io/")


def test_chain_walks_back_to_sources():
    events, src, ann = synthetic()
    tree = graph.chain(events, "deployment/iris")
    assert tree["job"] == "deployment/iris"
    model_in = tree["inputs"][0]
    assert model_in["producer"]["job"] == "trainingrun/iris"
    report_in = tree["inputs"][1]
    assert report_in["producer"]["job"] == "evaluation/iris"
    train_in = model_in["producer"]["inputs"][0]
    assert train_in["producer"]["job"] == "labeljob/iris"
    ds_in = train_in["producer"]["inputs"][0]
    assert ds_in["producer"]["job"] == "dataset/iris"
    assert ds_in["producer"]["inputs"] == [{"uri": src["uri"], "digest": src["digest"], "producer": None}]
    assert graph.sources(tree) == [src, ann]
    text = graph.format_chain(tree)
    for job in ("deployment/iris", "trainingrun/iris", "labeljob/iris", "dataset/iris", "evaluation/iris"):
        assert job in text
    assert "s3://raw/iris.csv" in text and "[source]" in text and "(see above)" in text
    assert "trainingrun/other" not in text


def test_chain_picks_producer_before_consumer_and_breaks_cycles():
    ns = "n"
    a = {"uri": "s3://loom/n/a", "digest": d("a")}
    b = {"uri": "s3://loom/n/b", "digest": d("b")}
    old = build_event(ns, "trainingrun", "m", [], [a], run_seed="old", event_time="2026-01-01T00:01:00Z")
    new = build_event(ns, "trainingrun", "m", [], [a], run_seed="new", event_time="2026-01-01T00:09:00Z")
    dep = build_event(ns, "deployment", "m", [a], [], run_seed="dep", event_time="2026-01-01T00:05:00Z")
    tree = graph.chain([old, new, dep], "deployment/m")
    assert tree["inputs"][0]["producer"]["runId"] == run_id("old")
    # x consumes b and produces a; y consumes a and produces b: a cycle
    x = build_event(ns, "labeljob", "x", [b], [a], run_seed="x", event_time="2026-01-01T00:01:00Z")
    y = build_event(ns, "labeljob", "y", [a], [b], run_seed="y", event_time="2026-01-01T00:02:00Z")
    tree = graph.chain([x, y], "labeljob/y")
    assert "cycle" in graph.format_chain(tree)
    with pytest.raises(graph.LineageError, match="no lineage events for deployment/none"):
        graph.chain([x, y], "deployment/none")


def test_write_and_load_events(storage, ns):
    events, _, _ = synthetic(ns)
    for e in events:
        kind, name = e["job"]["name"].split("/")
        uri = write_event(storage, "loom", ns, kind, name, e)
        assert uri == f"s3://loom/{ns}/lineage/{kind}/{name}/{e['run']['runId']}.json"
    loaded = graph.load_events(storage, ns)
    assert len(loaded) == len(events)
    assert graph.chain(loaded, "deployment/iris")["inputs"][0]["producer"]["eventUri"].startswith(
        f"s3://loom/{ns}/lineage/trainingrun/iris/")
