import io
import json

import numpy as np
import pandas as pd
import pytest

from loom.workloads import ingest, label
from loom.workloads._task import execute

from wl_helpers import ingest_task, label_task, upload_quickstart

IDS = [f"iris-{i:03d}" for i in range(150)]
CLASSES = ["a", "b", "c"]


def _with(ns, ds, annotations, **over):
    """A label task whose annotations are given as sources ({uri, format})."""
    task = label_task(ns, ds, [], **over)
    task["annotations"] = annotations
    return task


def _dataset(storage, ns):
    uris = upload_quickstart(storage, ns)
    code, ds = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0, ds
    return uris, ds


def test_label_passes_on_quickstart(storage, ns):
    uris, ds = _dataset(storage, ns)
    code, r = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert code == 0, r
    assert r["passed"] is True
    assert r["agreement"]["metric"] == "fleiss_kappa" and 0.7 < r["agreement"]["value"] < 0.9
    figs = r["agreementFigures"]
    assert len(figs["cohenKappa"]["pairs"]) == 3 and figs["krippendorffAlpha"]["items"] == 150
    assert [p["label"] for p in figs["perLabel"]] == ["setosa", "versicolor", "virginica"]
    assert r["annotators"] == ["ann-alice", "ann-bob", "ann-chen"]
    assert r["classes"] == ["setosa", "versicolor", "virginica"]
    assert r["items"] == 150
    assert sum(ref["rows"] for ref in r["splits"].values()) == 150 - r["ties"] == r["adjudication"]["labelled"]
    train = pd.read_csv(io.BytesIO(storage.get_bytes(r["splits"]["train"]["uri"])))
    assert list(train.columns) == ["id", "sepal_length", "sepal_width", "petal_length", "petal_width", "label"]
    assert storage.sha256(r["splits"]["train"]["uri"]) == r["splits"]["train"]["digest"]
    # majority labels match the truth on iris (annotators are 90-95% right)
    from sklearn.datasets import load_iris
    iris = load_iris()
    truth = dict(zip(IDS, iris.target_names[iris.target]))
    assert (train["label"] == train["id"].map(truth)).mean() > 0.97
    # ties are never guessed: they are in the review queue, not in the splits
    queue = [json.loads(line) for line in storage.get_bytes(r["reviewQueue"]["uri"]).decode().splitlines()]
    assert len(queue) == r["ties"] == r["reviewQueue"]["items"] and all(q["reason"] == "tie" for q in queue)
    published = set(pd.concat(pd.read_csv(io.BytesIO(storage.get_bytes(s["uri"]))) for s in r["splits"].values())["id"])
    assert not published & {q["item"] for q in queue}
    card = storage.get_json(r["labelCard"]["uri"])
    assert card["version"] == r["version"] and card["adjudication"]["method"] == "majority"
    assert storage.sha256(r["labelCard"]["uri"]) == r["labelCard"]["digest"]
    assert "# Label card" in storage.get_bytes(r["labelCard"]["markdownUri"]).decode()
    # deterministic
    code, r2 = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert r2["version"] == r["version"] and r2["labelCard"]["digest"] == r["labelCard"]["digest"]


def _truth(ids=IDS):
    return {i: CLASSES[k % 3] for k, i in enumerate(ids)}


def _noisy_rows(ids, annotators, accuracy, seed, skip=0.0):
    rng = np.random.default_rng(seed)
    truth = _truth(ids)
    rows = []
    for ann in annotators:
        for i in ids:
            if rng.random() < skip:
                continue
            lab = truth[i] if rng.random() < accuracy else CLASSES[rng.integers(3)]
            rows.append((i, ann, lab))
    return rows


def _csv(rows):
    return ("item,annotator,label\n" + "".join(f"{i},{a},{lab}\n" for i, a, lab in rows)).encode()


def _noisy(ids, annotators, accuracy, seed):
    return _csv(_noisy_rows(ids, annotators, accuracy, seed))


def test_label_gate_fails_and_writes_nothing(storage, ns):
    uris, ds = _dataset(storage, ns)
    low = f"s3://loom/{ns}/sources/low.csv"
    storage.put_bytes(low, _noisy(IDS, ["x", "y", "z"], 0.35, seed=1))
    task = label_task(ns, ds, [low])
    code, r = execute(label.main, task, storage)
    assert code == 0, r
    assert r["passed"] is False
    assert "version" not in r and "splits" not in r and "labelCard" not in r
    value = r["agreement"]["value"]
    assert value < 0.6
    assert r["message"] == f"fleiss_kappa {value:.2f} is below minAgreement 0.6"
    assert r["agreementFigures"]["krippendorffAlpha"]["value"] < 0.6  # every figure is kept
    assert storage.list(task["outputPrefix"]) == []

    # the figure named is the one chosen
    code, r = execute(label.main, label_task(ns, ds, [low], metric="krippendorff"), storage)
    assert r["message"].startswith(f"krippendorff_alpha {r['agreementFigures']['krippendorffAlpha']['value']:.2f} is below")


def test_label_metric_choice(storage, ns):
    uris, ds = _dataset(storage, ns)
    two = f"s3://loom/{ns}/sources/two.csv"
    storage.put_bytes(two, _noisy(IDS, ["x", "y"], 0.97, seed=2))
    code, r = execute(label.main, label_task(ns, ds, [two]), storage)
    assert code == 0 and r["passed"], r
    assert r["agreement"]["metric"] == "cohen_kappa"
    code, r = execute(label.main, label_task(ns, ds, [two], metric="fleiss"), storage)
    assert r["agreement"]["metric"] == "fleiss_kappa"
    # three annotators with gaps: auto picks Krippendorff, which allows missing labels
    gaps = f"s3://loom/{ns}/sources/gaps.csv"
    storage.put_bytes(gaps, _csv(_noisy_rows(IDS, ["x", "y", "z"], 0.95, seed=3, skip=0.2)))
    code, r = execute(label.main, label_task(ns, ds, [gaps]), storage)
    assert code == 0 and r["agreement"]["metric"] == "krippendorff_alpha", r
    # Cohen with three annotators is the mean over the pairs
    code, r = execute(label.main, label_task(ns, ds, [gaps], metric="cohen"), storage)
    pairs = r["agreementFigures"]["cohenKappa"]["pairs"]
    assert len(pairs) == 3 and r["agreement"]["value"] == pytest.approx(np.mean([p["value"] for p in pairs]), abs=1e-6)


def _labelstudio(rows, user_ids):
    tasks = {}
    for n, (item, ann, lab) in enumerate(rows):
        task = tasks.setdefault(item, {"id": 1000 + len(tasks), "data": {"id": item}, "annotations": []})
        task["annotations"].append({"id": n, "completed_by": user_ids[ann], "was_cancelled": False,
                                    "result": [{"from_name": "species", "to_name": "text", "type": "choices",
                                                "value": {"choices": [lab]}}]})
    return json.dumps(list(tasks.values())).encode()


def _colluding_rows(seed=5):
    """Three honest annotators (80%) and two who both say c whenever the truth is b."""
    rng = np.random.default_rng(seed)
    truth = _truth()
    rows = []
    for ann in ("h1", "h2", "h3"):
        for i in IDS:
            lab = truth[i] if rng.random() < 0.8 else rng.choice([c for c in CLASSES if c != truth[i]])
            rows.append((i, ann, str(lab)))
    for ann in ("p1", "p2"):
        rows += [(i, ann, "c" if truth[i] == "b" else truth[i]) for i in IDS]
    return rows


def test_labelstudio_gold_and_dawid_skene(storage, ns):
    uris, ds = _dataset(storage, ns)
    rows = _colluding_rows()
    ls = f"s3://loom/{ns}/sources/export.json"
    storage.put_bytes(ls, _labelstudio(rows[:450], {"h1": 1, "h2": 2, "h3": 3}))  # honest ones in Label Studio
    extra = f"s3://loom/{ns}/sources/pair.csv"
    storage.put_bytes(extra, _csv(rows[450:]))  # the pair as CSV
    guidelines = f"s3://loom/{ns}/sources/guidelines.md"
    storage.put_bytes(guidelines, b"# how to label\n")
    annotations = [{"uri": ls, "format": "labelstudio"}, {"uri": extra, "format": "csv"}]
    truth = _truth()

    # Dawid-Skene alone already sees through the pair where a majority does not
    accuracy = {}
    for method in ("majority", "dawid-skene"):
        code, r = execute(label.main, _with(ns, ds, annotations, adjudication=method,
                                                 minAgreement=0.3), storage)
        assert code == 0 and r["passed"], r
        frame = pd.concat(pd.read_csv(io.BytesIO(storage.get_bytes(s["uri"]))) for s in r["splits"].values())
        accuracy[method] = (frame["label"] == frame["id"].map(truth)).sum() / 150
    assert accuracy["dawid-skene"] > 0.9 > accuracy["majority"] + 0.05, accuracy

    # a gold set: 30 known answers; the pair scores 2/3 there and is excluded below 0.75
    gold_ids = IDS[:30]
    gold = f"s3://loom/{ns}/sources/gold.csv"
    storage.put_bytes(gold, ("item,label\n" + "".join(f"{i},{truth[i]}\n" for i in gold_ids)).encode())
    task = _with(ns, ds, annotations, adjudication="dawid-skene", gold={"uri": gold},
                      minGoldAccuracy=0.75, minConfidence=0.9, minAgreement=0.4, guidelines={"uri": guidelines, "version": "v2"})
    code, r = execute(label.main, task, storage)
    assert code == 0 and r["passed"], r
    assert r["annotators"] == ["1", "2", "3", "p1", "p2"] and r["excludedAnnotators"] == ["p1", "p2"]
    by = {a["annotator"]: a for a in r["gold"]["annotators"]}
    assert by["p1"]["accuracy"] == pytest.approx(20 / 30, abs=1e-6) and by["p1"]["goldItems"] == 30
    assert by["p1"]["reason"] == "accuracy 0.667 < minGoldAccuracy 0.75 on 30 gold item(s)"
    assert not by["1"]["excluded"] and by["1"]["accuracy"] > 0.75
    assert r["guidelines"]["version"] == "v2" and r["guidelines"]["digest"].startswith("sha256:")
    assert r["agreementFigures"]["cohenKappa"]["pairs"][0]["annotators"] == ["1", "2"]  # kept annotators only
    # low-confidence items are queued, most uncertain first, and not published
    queue = [json.loads(x) for x in storage.get_bytes(r["reviewQueue"]["uri"]).decode().splitlines()]
    assert r["reviewQueue"]["items"] == len(queue) == r["adjudication"]["ties"] + r["adjudication"]["lowConfidence"] > 0
    assert all(q["confidence"] < 0.9 for q in queue if q["reason"] == "low-confidence")
    assert [q["entropy"] for q in queue] == sorted((q["entropy"] for q in queue), reverse=True)
    assert not set(gold_ids) & {q["item"] for q in queue}
    frame = pd.concat(pd.read_csv(io.BytesIO(storage.get_bytes(s["uri"]))) for s in r["splits"].values())
    assert not set(frame["id"]) & {q["item"] for q in queue}
    assert (frame.set_index("id").loc[gold_ids, "label"] == [truth[i] for i in gold_ids]).all()  # gold answers win
    assert (frame["label"] == frame["id"].map(truth)).mean() > 0.95
    csv_queue = pd.read_csv(io.BytesIO(storage.get_bytes(r["reviewQueue"]["csvUri"])))
    assert csv_queue["item"].tolist() == [q["item"] for q in queue]
    card = storage.get_json(r["labelCard"]["uri"])
    assert card["guidelines"]["version"] == "v2" and card["adjudication"]["method"] == "dawid-skene"
    assert [a["name"] for a in card["annotators"] if a["excluded"]] == ["p1", "p2"]
    before = card["agreement"]["beforeExclusion"]
    assert before["fleissKappa"] is not None and before["fleissKappa"] != r["agreementFigures"]["fleissKappa"]["value"]
    assert card["gold"]["digest"] == storage.sha256(gold)
    assert {a["uri"] for a in card["annotationFiles"]} == {ls, extra}
    md = storage.get_bytes(r["labelCard"]["markdownUri"]).decode()
    assert "v2" in md and "dawid-skene" in md and "accuracy 0.667 < minGoldAccuracy 0.75" in md
    assert "Before the gold exclusions" in md
    # the version depends on the guideline version too
    code, r2 = execute(label.main, {**task, "guidelines": {"uri": guidelines, "version": "v3"},
                                    "resultUri": task["resultUri"] + ".2"}, storage)
    assert r2["version"] != r["version"]


def _fails(storage, task, reason, *needles):
    code, r = execute(label.main, task, storage)
    assert code == 1 and r.get("reason") == reason, r
    for needle in needles:
        assert needle in r["error"], r["error"]
    assert storage.list(task["outputPrefix"]) == []  # nothing written half-way
    return r["error"]


def test_label_errors(storage, ns):
    uris, ds = _dataset(storage, ns)
    one = f"s3://loom/{ns}/sources/one.csv"
    storage.put_bytes(one, b"item,annotator,label\niris-000,solo,a\niris-001,solo,b\n")
    assert _fails(storage, label_task(ns, ds, [one]), "NotEnoughAnnotators") == \
        "agreement needs at least 2 annotators, found 1 (solo)"

    stray = f"s3://loom/{ns}/sources/stray.csv"
    storage.put_bytes(stray, b"item,annotator,label\niris-000,a,x\niris-000,b,x\nghost-1,a,x\nghost-1,b,y\n")
    assert _fails(storage, label_task(ns, ds, [stray]), "UnknownItems") == \
        "annotations name 1 item(s) not in the dataset: ghost-1"

    cols = f"s3://loom/{ns}/sources/cols.csv"
    storage.put_bytes(cols, b"item,who,label\niris-000,a,x\n")
    _fails(storage, label_task(ns, ds, [cols]), "MalformedAnnotations", "lack column(s) annotator")

    bad_json = f"s3://loom/{ns}/sources/bad.json"
    storage.put_bytes(bad_json, b'[{"id": 1, "annotations": [')
    _fails(storage, _with(ns, ds, [{"uri": bad_json, "format": "labelstudio"}]),
           "MalformedAnnotations", "malformed JSON", bad_json)

    # fleiss on data where no item has every label: undefined, and the message says what to use
    sparse = f"s3://loom/{ns}/sources/sparse.csv"
    storage.put_bytes(sparse, _csv([(IDS[k], ["x", "y", "z"][k % 3], "a") for k in range(30)] +
                                   [(IDS[k], ["x", "y", "z"][(k + 1) % 3], "b") for k in range(30)]))
    _fails(storage, label_task(ns, ds, [sparse], metric="fleiss"), "AgreementUndefined", "fleiss_kappa is undefined",
           "krippendorff")


def test_gold_errors(storage, ns):
    uris, ds = _dataset(storage, ns)
    gold = f"s3://loom/{ns}/sources/gold.csv"
    storage.put_bytes(gold, b"item,label\niris-000,setosa\nnot-an-iris,setosa\n")
    _fails(storage, label_task(ns, ds, [uris["annotations"]], gold={"uri": gold}), "UnknownGoldItems",
           "gold names 1 item(s) not in the dataset: not-an-iris")

    # gold answers that nobody matches: every annotator is excluded
    wrong = f"s3://loom/{ns}/sources/wrong.csv"
    storage.put_bytes(wrong, ("item,label\n" + "".join(f"{i},nonsense\n" for i in IDS[:10])).encode())
    msg = _fails(storage, label_task(ns, ds, [uris["annotations"]], gold={"uri": wrong}, minGoldAccuracy=0.5),
                 "AllAnnotatorsExcluded", "every annotator is below minGoldAccuracy")
    assert "ann-alice: accuracy 0.000 < minGoldAccuracy 0.5 on 10 gold item(s)" in msg

    dup = f"s3://loom/{ns}/sources/dup.csv"
    storage.put_bytes(dup, b"item,label\niris-000,setosa\niris-000,virginica\n")
    _fails(storage, label_task(ns, ds, [uris["annotations"]], gold={"uri": dup}), "MalformedGold",
           "gives item 'iris-000' more than one label")

    # two annotators, one excluded: one is left, and agreement needs two
    two = f"s3://loom/{ns}/sources/two.csv"
    truth = _truth()
    storage.put_bytes(two, _csv([(i, "good", truth[i]) for i in IDS] + [(i, "bad", "a") for i in IDS]))
    answers = f"s3://loom/{ns}/sources/answers.csv"
    storage.put_bytes(answers, ("item,label\n" + "".join(f"{i},{truth[i]}\n" for i in IDS[:12])).encode())
    _fails(storage, label_task(ns, ds, [two], gold={"uri": answers}, minGoldAccuracy=0.8), "NotEnoughAnnotators",
           "found 1 (good) after excluding 1 below minGoldAccuracy (bad)")

    _fails(storage, label_task(ns, ds, [uris["annotations"]], guidelines={"uri": f"s3://loom/{ns}/nope.md", "version": "1"}),
           "GuidelinesUnreadable", "nope.md")


def test_quickstart_example_spec(storage, ns):
    """examples/quickstart/02-labeljob.yaml as the planner would send it: gold, guidelines, Dawid-Skene."""
    import yaml

    from wl_helpers import DATA, ROOT

    uris, ds = _dataset(storage, ns)
    spec = yaml.safe_load((ROOT / "examples/quickstart/02-labeljob.yaml").read_text())["spec"]
    moved = {}
    for name in ("annotations.csv", "gold.csv", "guidelines.md"):
        moved[f"s3://loom-examples/quickstart/{name}"] = f"s3://loom/{ns}/sources/{name}"
        storage.put_file(moved[f"s3://loom-examples/quickstart/{name}"], DATA / name)
    task = _with(ns, ds, [{**a, "uri": moved[a["uri"]]} for a in spec["annotations"]],
                 guidelines={**spec["guidelines"], "uri": moved[spec["guidelines"]["uri"]]},
                 gold={"uri": moved[spec["gold"]["uri"]]}, minGoldAccuracy=spec["minGoldAccuracy"],
                 metric=spec["agreementMetric"], minAgreement=spec["minAgreement"], labelColumn=spec["labelColumn"],
                 adjudication=spec["adjudication"], minConfidence=spec["minConfidence"])
    code, r = execute(label.main, task, storage)
    assert code == 0 and r["passed"], r
    assert r["excludedAnnotators"] == [] and r["gold"]["items"] == 15
    assert r["agreement"]["metric"] == "fleiss_kappa"
    from sklearn.datasets import load_iris
    iris = load_iris()
    truth = dict(zip(IDS, iris.target_names[iris.target]))
    frame = pd.concat(pd.read_csv(io.BytesIO(storage.get_bytes(s["uri"]))) for s in r["splits"].values())
    assert len(frame) >= 140 and (frame["species"] == frame["id"].map(truth)).mean() > 0.98
