import io

import numpy as np
import pandas as pd

from loom.workloads import ingest, label
from loom.workloads._task import execute

from wl_helpers import ingest_task, label_task, upload_quickstart


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
    assert r["annotators"] == ["ann-alice", "ann-bob", "ann-chen"]
    assert r["classes"] == ["setosa", "versicolor", "virginica"]
    assert r["items"] == 150
    assert sum(ref["rows"] for ref in r["splits"].values()) == 150 - r["ties"]
    train = pd.read_csv(io.BytesIO(storage.get_bytes(r["splits"]["train"]["uri"])))
    assert list(train.columns) == ["id", "sepal_length", "sepal_width", "petal_length", "petal_width", "label"]
    assert storage.sha256(r["splits"]["train"]["uri"]) == r["splits"]["train"]["digest"]
    # majority labels match the truth on iris (annotators are 90-95% right)
    from sklearn.datasets import load_iris
    iris = load_iris()
    truth = dict(zip([f"iris-{i:03d}" for i in range(150)], iris.target_names[iris.target]))
    assert (train["label"] == train["id"].map(truth)).mean() > 0.97
    # deterministic
    code, r2 = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert r2["version"] == r["version"]


def _noisy(ids, annotators, accuracy, seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    truth = {i: classes[k % 3] for k, i in enumerate(ids)}
    rows = ["item,annotator,label"]
    for ann in annotators:
        for i in ids:
            lab = truth[i] if rng.random() < accuracy else classes[rng.integers(3)]
            rows.append(f"{i},{ann},{lab}")
    return ("\n".join(rows) + "\n").encode()


def test_label_gate_fails_and_writes_nothing(storage, ns):
    uris, ds = _dataset(storage, ns)
    ids = [f"iris-{i:03d}" for i in range(150)]
    low = f"s3://loom/{ns}/sources/low.csv"
    storage.put_bytes(low, _noisy(ids, ["x", "y", "z"], 0.35, seed=1))
    task = label_task(ns, ds, [low])
    code, r = execute(label.main, task, storage)
    assert code == 0, r
    assert r["passed"] is False
    assert "version" not in r and "splits" not in r
    value = r["agreement"]["value"]
    assert value < 0.6
    assert r["message"] == f"fleiss_kappa {value:.2f} is below minAgreement 0.60"
    assert storage.list(task["outputPrefix"]) == []


def test_label_cohen_for_two_annotators(storage, ns):
    uris, ds = _dataset(storage, ns)
    ids = [f"iris-{i:03d}" for i in range(150)]
    two = f"s3://loom/{ns}/sources/two.csv"
    storage.put_bytes(two, _noisy(ids, ["x", "y"], 0.97, seed=2))
    code, r = execute(label.main, label_task(ns, ds, [two]), storage)
    assert code == 0 and r["passed"], r
    assert r["agreement"]["metric"] == "cohen_kappa"
    code, r = execute(label.main, label_task(ns, ds, [two], metric="fleiss"), storage)
    assert r["agreement"]["metric"] == "fleiss_kappa"


def test_label_errors(storage, ns):
    uris, ds = _dataset(storage, ns)
    one = f"s3://loom/{ns}/sources/one.csv"
    storage.put_bytes(one, b"item,annotator,label\niris-000,solo,a\niris-001,solo,b\n")
    code, r = execute(label.main, label_task(ns, ds, [one]), storage)
    assert code == 1 and r == {"error": "agreement needs at least 2 annotators, found 1 (solo)"}

    stray = f"s3://loom/{ns}/sources/stray.csv"
    storage.put_bytes(stray, b"item,annotator,label\niris-000,a,x\niris-000,b,x\nghost-1,a,x\nghost-1,b,y\n")
    code, r = execute(label.main, label_task(ns, ds, [stray]), storage)
    assert code == 1 and r["error"] == "annotations name 1 item(s) not in the dataset: ghost-1"

    cols = f"s3://loom/{ns}/sources/cols.csv"
    storage.put_bytes(cols, b"item,who,label\niris-000,a,x\n")
    code, r = execute(label.main, label_task(ns, ds, [cols]), storage)
    assert code == 1 and "lack column(s) annotator" in r["error"]

    code, r = execute(label.main, label_task(ns, ds, [uris["annotations"]], metric="cohen"), storage)
    assert code == 1 and "exactly 2 annotators" in r["error"]
