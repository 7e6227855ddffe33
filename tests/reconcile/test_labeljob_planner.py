"""LabelJob planner: the task it sends, the reasons it reports, the status and lineage it writes."""
from __future__ import annotations

import datetime as dt
import itertools
import json

from loom.config import Settings
from loom.reconcile import labeljob
from loom.reconcile.common import get_condition

from test_planners import _assert_admissible

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
S = Settings(bucket="loom", s3_endpoint="http://s3:9000")
D, D2, D3, D4 = ("sha256:" + c * 64 for c in "abcd")
SPLITS = {k: {"uri": f"s3://loom/team-a/labels/{k}.csv", "digest": D, "rows": 10} for k in ("train", "validation", "test")}
RAW = {k: {"uri": f"s3://loom/team-a/datasets/{k}.csv", "digest": D2, "rows": 10} for k in ("train", "validation", "test")}
DS = {"metadata": {"name": "iris"}, "spec": {"idColumn": "id"}, "status": {"phase": "Ready", "version": D2, "splits": RAW}}
SPEC = {
    "datasetRef": {"name": "iris"},
    "annotations": [{"uri": "s3://data/export.json", "format": "labelstudio"}, {"uri": "s3://data/more.csv"}],
    "guidelines": {"uri": "https://wiki.example/guidelines", "version": "v3"},
    "gold": {"uri": "s3://data/gold.csv"},
    "minGoldAccuracy": 0.8,
    "agreementMetric": "krippendorff",
    "minAgreement": 0.6,
    "adjudication": "dawid-skene",
    "minConfidence": 0.9,
}


def body(spec=SPEC, status=None):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "LabelJob",
            "metadata": {"name": "lj", "namespace": "team-a", "uid": "0123456789abcdef", "generation": 1},
            "spec": spec, "status": status or {}}


def job(ok=True):
    cond = {"type": "Complete" if ok else "Failed", "status": "True"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": [cond]}}


def figures(n_annotators=3):
    names = [f"a{i}" for i in range(n_annotators)]
    pairs = [{"annotators": [x, y], "value": round(0.5 + 0.001 * k, 6), "items": 50}
             for k, (x, y) in enumerate(itertools.combinations(names, 2))]
    pairs[-1]["value"] = None
    return names, {
        "cohenKappa": {"value": 0.7, "items": 50, "pairs": pairs},
        "fleissKappa": {"value": None, "items": 0},
        "krippendorffAlpha": {"value": 0.71, "items": 50},
        "perLabel": [{"label": f"l{i}", "cohenKappa": 0.7, "fleissKappa": None, "krippendorffAlpha": 0.7} for i in range(60)],
    }


def result(n_annotators=3, passed=True):
    names, figs = figures(n_annotators)
    out = {
        "passed": passed,
        "agreement": {"metric": "krippendorff_alpha", "value": 0.71 if passed else 0.41},
        "agreementFigures": figs,
        "annotators": names,
        "excludedAnnotators": [names[-1]],
        "items": 50, "ties": 2, "classes": ["a", "b"] if passed else [],
        "guidelines": {"uri": "https://wiki.example/guidelines", "version": "v3"},
        "gold": {"uri": "s3://data/gold.csv", "digest": D3, "items": 10, "annotators": [
            {"annotator": names[-1], "accuracy": 0.5, "goldItems": 10, "excluded": True,
             "reason": "accuracy 0.500 < minGoldAccuracy 0.8 on 10 gold item(s)"}]},
        "annotationDigests": [{"uri": "s3://data/export.json", "digest": D4, "format": "labelstudio"},
                              {"uri": "s3://data/more.csv", "digest": D3, "format": "csv"}],
    }
    if passed:
        out.update(version=D, splits=SPLITS, manifestUri="s3://loom/m.json",
                   adjudication={"method": "dawid-skene", "labelled": 40, "ties": 2, "lowConfidence": 3, "iterations": 12},
                   reviewQueue={"uri": "s3://loom/q.jsonl", "csvUri": "s3://loom/q.csv", "digest": D4, "items": 5},
                   labelCard={"uri": "s3://loom/card.json", "digest": D3, "markdownUri": "s3://loom/card.md"})
    else:
        out["message"] = "krippendorff_alpha 0.41 is below minAgreement 0.6"
    return out


def test_task_carries_every_setting():
    p = labeljob.plan(body(), labeljob.Observed(dataset=DS), S, NOW)
    env = {e["name"]: e.get("value") for e in p.create[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    task = json.loads(env["LOOM_TASK"])
    assert task["annotations"][0] == {"uri": "s3://data/export.json", "format": "labelstudio"}
    assert task["annotations"][1]["format"] == "csv"
    assert task["guidelines"] == {"uri": "https://wiki.example/guidelines", "version": "v3"}
    assert task["gold"]["uri"] == "s3://data/gold.csv" and task["minGoldAccuracy"] == 0.8
    assert (task["metric"], task["adjudication"], task["minConfidence"]) == ("krippendorff", "dawid-skene", 0.9)
    assert task["dataset"]["version"] == D2 and task["dataset"]["idColumn"] == "id"


def test_input_errors_keep_their_reason():
    for reason, message in [("UnknownItems", "annotations name 3 item(s) not in the dataset: x, y, z"),
                            ("NotEnoughAnnotators", "agreement needs at least 2 annotators, found 1 (solo)"),
                            ("AllAnnotatorsExcluded", "every annotator is below minGoldAccuracy")]:
        p = labeljob.plan(body(), labeljob.Observed(dataset=DS, job=job(False), result={"error": message, "reason": reason}), S, NOW)
        cond = get_condition(p.status["conditions"], "Failed")
        assert p.status["phase"] == "Failed" and cond["reason"] == reason and cond["message"] == message
        assert p.events[0].reason == reason
    # an error without a reason still fails, generically
    p = labeljob.plan(body(), labeljob.Observed(dataset=DS, job=job(False), result={"error": "boom"}), S, NOW)
    assert get_condition(p.status["conditions"], "Failed")["reason"] == "LabellingFailed"


def test_gate_failure_keeps_every_figure_and_fits_the_crd():
    p = labeljob.plan(body(), labeljob.Observed(dataset=DS, job=job(), result=result(passed=False)), S, NOW)
    cond = get_condition(p.status["conditions"], "Failed")
    assert cond["reason"] == "AgreementBelowThreshold" and cond["message"] == "krippendorff_alpha 0.41 is below minAgreement 0.6"
    assert p.status["agreementFigures"]["cohenKappa"]["value"] == 0.7
    assert p.status["excludedAnnotators"] == ["a2"] and p.status["gold"]["annotators"][0]["excluded"] is True
    assert "splits" not in p.status and "labelCard" not in p.status and p.lineage == []
    _assert_admissible("LabelJob", SPEC, p.status)


def test_ready_status_fits_the_crd_and_stays_small():
    p = labeljob.plan(body(), labeljob.Observed(dataset=DS, job=job(), result=result(n_annotators=12)), S, NOW)
    assert p.status["phase"] == "Ready"
    st = p.status
    assert st["labelCard"]["uri"] == "s3://loom/card.json" and st["reviewQueue"]["items"] == 5
    assert st["guidelines"]["version"] == "v3" and st["adjudication"]["method"] == "dawid-skene"
    cohen = st["agreementFigures"]["cohenKappa"]
    assert cohen["pairsTotal"] == 66 and len(cohen["pairs"]) == 45
    values = [p_["value"] for p_ in cohen["pairs"]]
    assert values[0] is None and values[1:] == sorted(values[1:])  # undefined, then lowest first
    assert len(st["agreementFigures"]["perLabel"]) == 50
    assert "5 item(s) in the review queue" in get_condition(st["conditions"], "Ready")["message"]
    _assert_admissible("LabelJob", SPEC, st)


def test_lineage_links_the_labelled_version_to_every_input():
    p = labeljob.plan(body(), labeljob.Observed(dataset=DS, job=job(), result=result()), S, NOW)
    rec = p.lineage[0]
    roles = [(i["uri"], i.get("digest"), i["facets"]["loom_role"]["role"]) for i in rec.inputs]
    assert ("s3://loom/team-a/datasets/train.csv", D2, "dataset") in roles
    assert ("s3://data/export.json", D4, "annotations") in roles and ("s3://data/more.csv", D3, "annotations") in roles
    assert ("s3://data/gold.csv", D3, "gold") in roles
    assert ("https://wiki.example/guidelines", None, "guidelines") in roles  # recorded, not fetched
    guide = next(i for i in rec.inputs if i["facets"]["loom_role"]["role"] == "guidelines")
    assert guide["facets"]["loom_role"]["version"] == "v3"
    outs = {o["uri"]: o["facets"]["loom_role"]["role"] for o in rec.outputs}
    assert outs["s3://loom/card.json"] == "label-card" and outs["s3://loom/q.jsonl"] == "review-queue"
    assert sum(r == "split" for r in outs.values()) == 3
    assert rec.facets["version"] == D and rec.facets["datasetVersion"] == D2

    # the events join: a TrainingRun reading the labelled splits walks back to the annotation files
    from loom.lineage.graph import chain, sources
    from loom.lineage.openlineage import build_event

    lj = build_event("team-a", rec.kind, rec.name, rec.inputs, rec.outputs, run_seed="1", event_time="1")
    tr = build_event("team-a", "trainingrun", "tr", [SPLITS["train"]], [], run_seed="2", event_time="2")
    found = {s["uri"] for s in sources(chain([lj, tr], "trainingrun/tr"))}
    assert {"s3://data/export.json", "s3://data/gold.csv", "https://wiki.example/guidelines"} <= found


def test_admission_refuses_a_gold_bound_without_gold():
    from loom.api import parse_spec

    spec = {k: v for k, v in SPEC.items() if k != "gold"}
    p = labeljob.plan(body(spec), labeljob.Observed(dataset=DS), S, NOW)
    assert p.status["phase"] == "Failed" and "minGoldAccuracy needs a gold set" in get_condition(p.status["conditions"], "Failed")["message"]
    assert parse_spec("LabelJob", SPEC).adjudication == "dawid-skene"
