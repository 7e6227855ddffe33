"""LabelJob through the real operator: a Label Studio export plus CSV, a gold set that excludes a
spammer, Dawid-Skene adjudication, a review queue and a label card; and a bad input that fails
with its reason."""
from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest

from it_helpers import condition, phase, refusal

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "quickstart" / "data"
NS = "labels-it"
BUCKET = "s3://loom-examples/labels-it"


@pytest.fixture(scope="module")
def namespace(env):
    env.tenant(NS)
    dataset = copy.deepcopy(env.quickstart("01-dataset.yaml")[0])
    dataset["metadata"]["namespace"] = NS
    env.applier.apply(dataset)
    return NS


def labelstudio_export(rows: list[dict[str, str]]) -> bytes:
    users = {}
    tasks: dict[str, dict] = {}
    for n, row in enumerate(rows):
        user = users.setdefault(row["annotator"], {"id": len(users) + 1, "email": f"{row['annotator']}@example.org"})
        task = tasks.setdefault(row["item"], {"id": 500 + len(tasks), "data": {"id": row["item"]}, "annotations": []})
        task["annotations"].append({"id": n, "completed_by": user, "was_cancelled": False, "result": [
            {"from_name": "species", "to_name": "image", "type": "choices", "value": {"choices": [row["label"]]}}]})
    return json.dumps(list(tasks.values())).encode()


def labeljob(name: str, annotations: list[dict], **extra) -> dict:
    spec = {"datasetRef": {"name": "iris"}, "annotations": annotations, "labelColumn": "species", **extra}
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "LabelJob", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def test_labelstudio_gold_dawid_skene_reaches_ready_with_a_label_card(env, namespace):
    rows = list(csv.DictReader(io.StringIO((DATA / "annotations.csv").read_text())))
    in_studio = [r for r in rows if r["annotator"] != "ann-chen"]
    # a spammer who answers setosa to everything, in the same Label Studio project
    in_studio += [{"item": r["item"], "annotator": "spam", "label": "setosa"} for r in rows if r["annotator"] == "ann-chen"]
    csv_rows = "item,annotator,label\n" + "".join(f"{r['item']},{r['annotator']},{r['label']}\n"
                                                   for r in rows if r["annotator"] == "ann-chen")
    env.storage.ensure_bucket("loom-examples")
    env.storage.put_bytes(f"{BUCKET}/export.json", labelstudio_export(in_studio))
    env.storage.put_bytes(f"{BUCKET}/chen.csv", csv_rows.encode())
    env.applier.apply(labeljob("species", [{"uri": f"{BUCKET}/export.json", "format": "labelstudio"},
                                           {"uri": f"{BUCKET}/chen.csv", "format": "csv"}],
                               guidelines={"uri": "s3://loom-examples/quickstart/guidelines.md", "version": "v1"},
                               gold={"uri": "s3://loom-examples/quickstart/gold.csv"}, minGoldAccuracy=0.8,
                               adjudication="dawid-skene", minConfidence=0.9))
    lj = env.wait_phase("LabelJob", "species", {"Ready", "Failed"}, ns=NS, timeout=240)
    st = lj["status"]
    assert phase(lj) == "Ready", st
    assert condition(lj, "Ready")["reason"] == "LabelsPublished"
    assert st["excludedAnnotators"] == ["spam@example.org"]
    spam = next(a for a in st["gold"]["annotators"] if a["annotator"] == "spam@example.org")
    assert spam["excluded"] and spam["goldItems"] == 15 and "< minGoldAccuracy 0.8 on 15 gold item(s)" in spam["reason"]
    assert st["agreement"]["metric"] == "fleiss_kappa" and st["agreement"]["value"] >= 0.6
    assert {"cohenKappa", "fleissKappa", "krippendorffAlpha", "perLabel"} <= set(st["agreementFigures"])
    assert st["adjudication"]["method"] == "dawid-skene" and st["guidelines"]["version"] == "v1"
    assert sum(s["rows"] for s in st["splits"].values()) == st["adjudication"]["labelled"]

    card = env.storage.get_json(st["labelCard"]["uri"])
    assert card["version"] == st["version"] and card["guidelines"]["version"] == "v1"
    assert env.storage.sha256(st["labelCard"]["uri"]) == st["labelCard"]["digest"]
    assert "dawid-skene" in env.storage.get_bytes(st["labelCard"]["markdownUri"]).decode()
    queue = env.storage.get_bytes(st["reviewQueue"]["uri"]).decode().splitlines()
    assert len(queue) == st["reviewQueue"]["items"]

    # lineage: the labelled splits and card come from the raw dataset, both annotation files, gold and guidelines
    from loom.lineage.graph import load_events
    event = next(e for e in load_events(env.storage, NS, "loom") if e["job"]["name"] == "labeljob/species")
    inputs = {f"{i['namespace']}/{i['name']}" for i in event["inputs"]}
    assert {f"{BUCKET}/export.json", f"{BUCKET}/chen.csv", "s3://loom-examples/quickstart/gold.csv",
            "s3://loom-examples/quickstart/guidelines.md"} <= inputs
    outputs = {f"{o['namespace']}/{o['name']}" for o in event["outputs"]}
    assert st["labelCard"]["uri"] in outputs and st["splits"]["train"]["uri"] in outputs


def test_annotations_for_unknown_items_fail_with_their_reason(env, namespace):
    export = [{"id": 1, "data": {"id": "iris-000"}, "annotations": [
        {"completed_by": u, "result": [{"value": {"choices": ["setosa"]}}]} for u in (1, 2)]},
        {"id": 2, "data": {"id": "tulip-7"}, "annotations": [
            {"completed_by": u, "result": [{"value": {"choices": ["setosa"]}}]} for u in (1, 2)]}]
    env.storage.put_bytes(f"{BUCKET}/stray.json", json.dumps(export).encode())
    env.applier.apply(labeljob("stray", [{"uri": f"{BUCKET}/stray.json", "format": "labelstudio"}]))
    lj = env.wait_phase("LabelJob", "stray", "Failed", ns=NS, timeout=180)
    failed = condition(lj, "Failed")
    assert failed["reason"] == "UnknownItems" and "tulip-7" in failed["message"]
    assert "splits" not in lj["status"] and "Traceback" not in failed["message"]


@pytest.mark.parametrize("extra,words", [
    ({"minGoldAccuracy": 0.8}, ["minGoldAccuracy needs a gold set"]),
    ({"guidelines": {"uri": "ftp://x/g.md", "version": "1"}}, ["spec.guidelines.uri", "s3://, https:// or http://"]),
    ({"adjudication": "coin-flip"}, ["spec.adjudication"]),
    ({"annotations": [{"uri": "s3://b/a.xml", "format": "xml"}]}, ["spec.annotations[0].format"]),
], ids=["gold-bound-without-gold", "guidelines-scheme", "adjudication-enum", "annotation-format"])
def test_admission_refuses_bad_labeljob_specs(env, namespace, extra, words):
    manifest = labeljob("refused", [{"uri": f"{BUCKET}/chen.csv"}])
    manifest["spec"].update(extra)
    message = refusal(env, manifest)
    for word in words:
        assert word in message, message
