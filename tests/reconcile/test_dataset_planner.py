"""The Dataset planner: references, reasons, the frozen test split, versions, drift. No cluster."""
from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from loom.config import Settings
from loom.local.admission import admit
from loom.reconcile import dataset
from loom.reconcile.common import get_condition

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
S = Settings(bucket="loom", s3_endpoint="http://s3:9000")
D, D2, D3, D4 = ("sha256:" + c * 64 for c in "abcd")
PROV = {"owner": "o", "license": "CC-BY-4.0", "consent": "public", "collectedAt": "2020-01-01T00:00:00Z"}
SPEC = {
    "sources": [{"uri": "s3://data/visits.jsonl", "format": "jsonl", "provenance": PROV}],
    "schema": [{"column": "age", "type": "integer", "min": 0}],
    "split": {"strategy": "group", "groupColumn": "patient", "seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2},
}


def body(spec=SPEC, name="visits", status=None, generation=1, ns="team-a"):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "Dataset",
            "metadata": {"name": name, "namespace": ns, "uid": "0123456789abcdef", "generation": generation},
            "spec": copy.deepcopy(spec), "status": status or {}}


def job(state):
    conds = {"ok": [{"type": "Complete", "status": "True"}], "fail": [{"type": "Failed", "status": "True"}]}[state]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": conds}}


def splits(digest=D):
    return {k: {"uri": f"s3://loom/team-a/datasets/visits/{k}.csv", "digest": digest, "rows": 10} for k in ("train", "validation", "test")}


def result(version=D, drift=None, test_digest=D):
    out = {"version": version, "rows": 30, "columns": ["id", "patient", "age"], "manifestUri": "s3://loom/m.json",
           "splits": splits(test_digest), "objects": [{"uri": "s3://data/visits.jsonl", "digest": D2, "bytes": 10}],
           "rowsRead": 33, "duplicatesRemoved": 3, "excludedRows": 0, "nulls": 0,
           "leakage": {"entityColumn": "patient", "entityOverlap": 0, "rowOverlap": 0},
           "report": {"uri": "s3://loom/r.json", "digest": D3},
           "dataCard": {"uri": "s3://loom/card.json", "digest": D4, "markdownUri": "s3://loom/card.md", "markdownDigest": D2},
           "frozenTest": {**splits(test_digest)["test"], "from": "visits"}, "drift": drift}
    return out


def task_of(plan):
    env = {e["name"]: e.get("value") for e in plan.create[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["LOOM_TASK"])


def crd_schema():
    path = Path(__file__).resolve().parents[2] / "crds" / "loom.dev_datasets.yaml"
    return yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def admissible(spec, status):
    pruned: list[str] = []
    obj = {"apiVersion": "loom.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "x"}, "spec": copy.deepcopy(spec),
           "status": copy.deepcopy(status)}
    errors = admit(crd_schema(), obj, None, pruned)
    assert not errors, [str(e) for e in errors]
    assert not pruned, f"status fields the CRD does not declare: {pruned}"


def test_task_carries_schema_split_and_drift():
    p = dataset.plan(body(), dataset.Observed(), S, NOW)
    task = task_of(p)
    assert task["schema"] == [{"column": "age", "type": "integer", "nullable": True, "min": 0.0}]
    assert task["split"]["strategy"] == "group" and task["split"]["groupColumn"] == "patient"
    assert task["sources"][0]["format"] == "jsonl" and task["deduplicate"] is True
    assert task["frozenTest"] is None and task["baseline"] is None
    assert task["drift"] == {"maxPsi": 0.2, "maxKs": 0.2, "maxJensenShannon": 0.1, "failOnDrift": False}


def test_ready_records_version_frozen_test_report_card_and_lineage():
    p = dataset.plan(body(), dataset.Observed(job=job("ok"), result=result()), S, NOW)
    st = p.status
    assert st["phase"] == "Ready" and st["version"] == D and st["readyGeneration"] == 1
    assert st["frozenTest"] == {"uri": splits()["test"]["uri"], "digest": D, "rows": 10, "from": "visits"}
    assert st["duplicatesRemoved"] == 3 and st["rowsRead"] == 33 and st["leakage"]["entityOverlap"] == 0
    assert st["dataCard"]["markdownUri"] == "s3://loom/card.md" and st["splitDigest"].startswith("sha256:")
    assert "3 duplicate rows removed" in get_condition(st["conditions"], "Ready")["message"]
    assert get_condition(st["conditions"], "DriftDetected") is None  # no baseline yet
    outputs = {o["uri"]: o["digest"] for o in p.lineage[0].outputs}
    assert outputs["s3://loom/card.json"] == D4 and outputs["s3://loom/card.md"] == D2 and outputs["s3://loom/r.json"] == D3
    assert p.lineage[0].facets["dataCard"] == "s3://loom/card.json"
    admissible(SPEC, st)


@pytest.mark.parametrize("reason", ["SchemaViolation", "MissingColumn", "EmptySplit", "Leakage", "TooFewEntities", "MalformedInput"])
def test_workload_reasons_become_the_failed_reason(reason):
    p = dataset.plan(body(), dataset.Observed(job=job("fail"), result={"error": f"column 'age': bad ({reason})", "reason": reason}), S, NOW)
    cond = get_condition(p.status["conditions"], "Failed")
    assert p.status["phase"] == "Failed" and cond["reason"] == reason and "column 'age'" in cond["message"]
    admissible(SPEC, p.status)


def test_unknown_reason_is_ingest_failed():
    p = dataset.plan(body(), dataset.Observed(job=job("fail"), result={"error": "boom", "reason": "Whatever"}), S, NOW)
    assert get_condition(p.status["conditions"], "Failed")["reason"] == "IngestFailed"


FROZEN_SPEC = dict(SPEC, split=dict(SPEC["split"], frozenTestFrom={"name": "visits-2024"}))


def ready_dataset(name, status_extra=None):
    st = {"phase": "Ready", "version": D3, "splits": splits(D3),
          "frozenTest": {**splits(D3)["test"], "from": "visits-2023"}, **(status_extra or {})}
    return {"metadata": {"name": name, "namespace": "team-a"}, "status": st}


def test_frozen_test_from_waits_then_passes_the_frozen_split():
    p = dataset.plan(body(FROZEN_SPEC), dataset.Observed(), S, NOW)
    assert p.create == [] and p.status["phase"] == "Pending"
    assert "spec.split.frozenTestFrom" in get_condition(p.status["conditions"], "Ready")["message"]
    pending = {"metadata": {"name": "visits-2024"}, "status": {"phase": "Ingesting"}}
    assert dataset.plan(body(FROZEN_SPEC), dataset.Observed(frozen_from=pending), S, NOW).create == []
    failed = {"metadata": {"name": "visits-2024"}, "status": {"phase": "Failed"}}
    p = dataset.plan(body(FROZEN_SPEC), dataset.Observed(frozen_from=failed), S, NOW)
    assert p.status["phase"] == "Failed" and get_condition(p.status["conditions"], "Failed")["reason"] == "DatasetFailed"

    p = dataset.plan(body(FROZEN_SPEC), dataset.Observed(frozen_from=ready_dataset("visits-2024")), S, NOW)
    task = task_of(p)
    # the frozen test of a Dataset that itself reused one keeps the origin
    assert task["frozenTest"] == {"uri": splits()["test"]["uri"], "digest": D3, "rows": 10, "from": "visits-2023"}
    done = dataset.plan(body(FROZEN_SPEC), dataset.Observed(frozen_from=ready_dataset("visits-2024"), job=job("ok"),
                                                            result=result(test_digest=D3) | {"frozenTest": task["frozenTest"]}), S, NOW)
    assert done.status["frozenTest"]["digest"] == D3 and done.status["frozenTest"]["from"] == "visits-2023"
    assert {"uri": splits()["test"]["uri"], "digest": D3} in done.lineage[0].inputs


def test_references_across_namespaces_or_to_itself_are_refused():
    spec = dict(SPEC, split=dict(SPEC["split"], frozenTestFrom={"name": "a", "namespace": "team-b"}))
    p = dataset.plan(body(spec), dataset.Observed(), S, NOW)
    assert get_condition(p.status["conditions"], "Failed")["reason"] == "CrossNamespaceReference"
    spec = dict(SPEC, drift={"baselineFrom": {"name": "visits"}})
    p = dataset.plan(body(spec), dataset.Observed(), S, NOW)
    assert get_condition(p.status["conditions"], "Failed")["reason"] == "InvalidReference"


def test_previous_ready_version_is_the_drift_baseline_of_the_next_generation():
    first = dataset.plan(body(), dataset.Observed(job=job("ok"), result=result(D)), S, NOW).status
    # the spec changes (a new source): generation 2 ingests against version D
    spec2 = dict(SPEC, sources=SPEC["sources"] + [{"uri": "s3://data/more.jsonl", "format": "jsonl", "provenance": PROV}])
    b2 = body(spec2, status=first, generation=2)
    p = dataset.plan(b2, dataset.Observed(), S, NOW)
    assert task_of(p)["baseline"] == {"name": "visits", "version": D, "splits": splits(D)}
    b2["status"] = p.status
    drift = {"baselineVersion": D, "detected": True, "driftedColumns": ["age"], "maxPsi": 0.9,
             "message": "drift against sha256:aaaa in 1 column(s): age (PSI 0.900 > 0.2)"}
    done = dataset.plan(b2, dataset.Observed(job=job("ok"), result=result(D2, drift=drift)), S, NOW)
    st = done.status
    assert st["version"] == D2 and st["previousVersion"] == D and st["readyGeneration"] == 2
    cond = get_condition(st["conditions"], "DriftDetected")
    assert cond["status"] == "True" and "age (PSI 0.900" in cond["message"]
    assert st["phase"] == "Ready"  # drift is a condition, not a failure
    assert any(e.reason == "DriftDetected" and e.type == "Warning" for e in done.events)
    admissible(spec2, st)


def test_a_ready_generation_is_never_rewritten():
    st = dataset.plan(body(), dataset.Observed(job=job("ok"), result=result(D)), S, NOW).status
    assert dataset.plan(body(status=st), dataset.Observed(job=job("ok"), result=result(D2)), S, NOW).status == st
    # even if asked to plan it again (say the phase were lost), the recorded version stays
    st2 = dict(st, phase="Ingesting")
    p = dataset.plan(body(status=st2), dataset.Observed(job=job("ok"), result=result(D2)), S, NOW)
    assert p.status["version"] == D and p.status["phase"] == "Ready"


def test_split_change_after_ready_is_refused_by_the_planner_too():
    st = dataset.plan(body(), dataset.Observed(job=job("ok"), result=result(D)), S, NOW).status
    spec = dict(SPEC, split=dict(SPEC["split"], seed=2))
    p = dataset.plan(body(spec, status=st, generation=2), dataset.Observed(), S, NOW)
    cond = get_condition(p.status["conditions"], "Failed")
    assert cond["reason"] == "SplitImmutable" and "frozenTestFrom" in cond["message"] and p.create == []


def test_admission_makes_the_split_immutable_and_allows_other_edits():
    schema = crd_schema()

    def obj(spec, status=None):
        o = {"apiVersion": "loom.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "x"}, "spec": copy.deepcopy(spec)}
        if status:
            o["status"] = status
        return o

    old = obj(SPEC)
    assert admit(schema, old) == []  # defaulted in place, as stored
    same = obj(dict(SPEC, sources=SPEC["sources"] * 2, schema=[]))
    assert admit(schema, same, old) == []
    assert admit(schema, obj(SPEC, {"phase": "Ready"}), old) == []
    for change in ({"seed": 2}, {"groupColumn": "other"}, {"frozenTestFrom": {"name": "y"}}):
        errors = admit(schema, obj(dict(SPEC, split=dict(SPEC["split"], **change))), old)
        assert [e.field for e in errors] == ["spec.split"], [str(e) for e in errors]
        assert "split is immutable" in str(errors[0])
    # the other new rules, at admission
    bad = obj(dict(SPEC, split={"strategy": "time", "timeColumn": "ts"}))
    assert "timeColumn and cutoffs are required" in str(admit(schema, bad)[0])
    bad = obj(dict(SPEC, split={"strategy": "time", "timeColumn": "ts", "cutoffs": {
        "validation": "2024-06-01T00:00:00Z", "test": "2024-01-01T00:00:00Z"}}))
    assert "cutoffs.validation must be before cutoffs.test" in str(admit(schema, bad)[0])
    bad = obj(dict(SPEC, split={"strategy": "stratified"}))
    assert "stratified needs labelColumn" in str(admit(schema, bad)[0])
    bad = obj(dict(SPEC, schema=[{"column": "a", "type": "string", "min": 1}]))
    assert "spec.schema[0]" in str(admit(schema, bad)[0])
    bad = obj(dict(SPEC, sources=[dict(SPEC["sources"][0], format="xlsx")]))
    assert "spec.sources[0].format" in str(admit(schema, bad)[0])
    bad = obj(dict(SPEC, sources=[{"uri": "s3://b/k", "provenance": {k: v for k, v in PROV.items() if k != "consent"}}]))
    assert "spec.sources[0].provenance.consent" in str(admit(schema, bad)[0])
    assert admit(schema, obj(dict(SPEC, sources=[dict(SPEC["sources"][0], uri="https://example.com/v.parquet")]))) == []
