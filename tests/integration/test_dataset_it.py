"""Datasets through the real operator: a JSON Lines source with a declared schema and a
group split reaches Ready with a data card; a later Dataset keeps its frozen test split;
a new generation reports drift against the previous version; bad input fails with its
reason; the split cannot be edited."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kubernetes.dynamic.exceptions import DynamicApiError

from it_helpers import condition, phase
from loom.lineage.openlineage import dataset_uri

pytestmark = pytest.mark.integration

NS = "data-it"
PROV = {"owner": "clinic-data", "license": "CC-BY-4.0", "consent": "study-consent-2024",
        "collectedAt": "2024-12-31T00:00:00Z", "description": "synthetic visits"}
SCHEMA = [
    {"column": "id", "type": "string", "nullable": False},
    {"column": "patient", "type": "string", "nullable": False},
    {"column": "age", "type": "integer", "min": 0, "max": 120},
    {"column": "value", "type": "number"},
    {"column": "ward", "type": "string", "allowedValues": ["a", "b", "c"]},
]
SPLIT = {"strategy": "group", "groupColumn": "patient", "seed": 3, "train": 0.6, "validation": 0.2, "test": 0.2}


def visits(seed, shift=0.0, prefix="v", n=40):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        for v in range(int(rng.integers(2, 9))):
            rows.append({"id": f"{prefix}{p:03d}-{v}", "patient": f"p{p:03d}", "age": 20 + p,
                         "value": round(float(rng.normal(shift, 1)), 4), "ward": "abc"[p % 3]})
    return rows


def dataset(name, uris, split=SPLIT, **extra):
    spec = {"sources": [{"uri": u, "format": f, "provenance": PROV} for u, f in uris], "idColumn": "id",
            "schema": SCHEMA, "split": split, **extra}
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": name, "namespace": NS}, "spec": spec}


@pytest.fixture(scope="module")
def namespace(env):
    env.tenant(NS)
    env.storage.ensure_bucket("loom-examples")
    rows = visits(1)
    env.storage.put_bytes(f"s3://loom-examples/{NS}/visits.jsonl",
                          "".join(json.dumps(r) + "\n" for r in rows + rows[:5]).encode())  # 5 exact duplicates
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(visits(2, shift=3.0, prefix="w")), buf)
    env.storage.put_bytes(f"s3://loom-examples/{NS}/later.parquet", buf.getvalue())
    return NS


def test_group_split_from_jsonl_reaches_ready_with_a_data_card(env, namespace):
    env.applier.apply(dataset("visits", [(f"s3://loom-examples/{NS}/visits.jsonl", "jsonl")]))
    ds = env.wait_phase("Dataset", "visits", {"Ready", "Failed"}, ns=NS, timeout=240)
    st = ds["status"]
    assert phase(ds) == "Ready", st
    assert st["duplicatesRemoved"] == 5 and st["rowsRead"] == st["rows"] + 5
    assert st["leakage"] == {"entityColumn": "patient", "entityOverlap": 0, "rowOverlap": 0}
    assert st["frozenTest"]["digest"] == st["splits"]["test"]["digest"] and st["frozenTest"]["from"] == "visits"
    card = env.storage.get_json(st["dataCard"]["uri"])
    assert card["dataset"]["version"] == st["version"] and card["provenance"][0]["consent"] == "study-consent-2024"
    assert env.storage.sha256(st["dataCard"]["markdownUri"]) == st["dataCard"]["markdownDigest"]
    # the lineage event links the card
    events = [env.storage.get_json(o.uri) for o in env.storage.list(f"s3://loom/{NS}/lineage/dataset/visits/")]
    outputs = {dataset_uri(o) for e in events for o in e["outputs"]}
    assert st["dataCard"]["uri"] in outputs and st["dataCard"]["markdownUri"] in outputs


def test_split_is_immutable_at_admission(env, namespace):
    env.wait_phase("Dataset", "visits", "Ready", ns=NS, timeout=240)
    with pytest.raises(DynamicApiError) as err:
        env.applier.apply(dataset("visits", [(f"s3://loom-examples/{NS}/visits.jsonl", "jsonl")], split=dict(SPLIT, seed=4)))
    assert err.value.status == 422
    assert "spec.split" in str(err.value.body) and "split is immutable" in str(err.value.body)


def test_later_dataset_keeps_the_frozen_test_split(env, namespace):
    first = env.wait_phase("Dataset", "visits", "Ready", ns=NS, timeout=240)
    env.applier.apply(dataset("visits-v2", [(f"s3://loom-examples/{NS}/visits.jsonl", "jsonl"),
                                            (f"s3://loom-examples/{NS}/later.parquet", "parquet")],
                              split=dict(SPLIT, frozenTestFrom={"name": "visits"})))
    ds = env.wait_phase("Dataset", "visits-v2", {"Ready", "Failed"}, ns=NS, timeout=240)
    st = ds["status"]
    assert phase(ds) == "Ready", st
    assert st["splits"]["test"]["digest"] == first["status"]["splits"]["test"]["digest"]
    assert st["frozenTest"]["from"] == "visits" and st["excludedRows"] > 0
    assert st["leakage"]["entityOverlap"] == 0 and st["leakage"]["rowOverlap"] == 0


def test_new_generation_reports_drift_against_the_previous_version(env, namespace):
    first = env.wait_phase("Dataset", "visits", "Ready", ns=NS, timeout=240)
    v1 = first["status"]["version"]
    env.applier.apply(dataset("visits", [(f"s3://loom-examples/{NS}/visits.jsonl", "jsonl"),
                                         (f"s3://loom-examples/{NS}/later.parquet", "parquet")]))
    ds = env.wait("Dataset", "visits", lambda o: (o.get("status") or {}).get("readyGeneration") == 2
                  or phase(o) == "Failed", ns=NS, timeout=240)
    st = ds["status"]
    assert phase(ds) == "Ready", st
    assert st["version"] != v1 and st["previousVersion"] == v1 and st["drift"]["baselineVersion"] == v1
    drifted = condition(ds, "DriftDetected")
    assert drifted["status"] == "True" and "value" in st["drift"]["driftedColumns"] and "value (" in drifted["message"]


def test_bad_input_fails_with_the_reason(env, namespace):
    rows = visits(5)
    rows[7]["age"] = "unknown"
    env.storage.put_bytes(f"s3://loom-examples/{NS}/bad.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    env.applier.apply(dataset("bad", [(f"s3://loom-examples/{NS}/bad.jsonl", "jsonl")]))
    ds = env.wait_phase("Dataset", "bad", {"Ready", "Failed"}, ns=NS, timeout=240)
    failed = condition(ds, "Failed")
    assert phase(ds) == "Failed" and failed["reason"] == "SchemaViolation", ds["status"]
    assert "column 'age': 1 of" in failed["message"] and "'unknown'" in failed["message"]
    assert env.storage.list(f"s3://loom/{NS}/datasets/bad/") == []
    assert env.operator.alive()
