import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from loom.workloads import evaluate, train
from loom.workloads._task import execute


def test_ddp_training_two_processes(trained, storage):
    ns, lb, result, stderrs = trained
    assert result["worldSize"] == 2 and result["backend"] == "gloo"
    assert result["metrics"]["val_accuracy"] > 0.8
    assert len(result["history"]) == 20
    assert result["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert result["classes"] == lb["classes"]
    assert result["model"]["digest"] == storage.sha256(result["model"]["uri"])
    metrics = storage.get_json(result["model"]["uri"].rsplit("/", 1)[0] + "/metrics.json")
    assert metrics["model"] == result["model"]
    # both ranks trained: rank 1 logs nothing of rank 0's epochs but exits 0 (fixture asserts)
    assert "epoch 20/20" in stderrs[0] and "epoch 20/20" not in stderrs[1]

    with tempfile.TemporaryDirectory() as tmp:
        path = storage.get_file(result["model"]["uri"], Path(tmp) / "m.onnx")
        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["loom.classes"]) == lb["classes"]
        assert json.loads(meta["loom.features"]) == result["features"]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["input"]
        assert [o.name for o in sess.get_outputs()] == ["probabilities"]
        # raw (unstandardised) features in, probabilities out, any batch size
        p = sess.run(["probabilities"], {"input": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3],
                                                            [5.9, 3.0, 4.2, 1.5]], np.float32)})[0]
        assert p.shape == (3, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
        assert [lb["classes"][i] for i in p.argmax(axis=1)] == ["setosa", "virginica", "versicolor"]


def test_train_single_process_errors(storage, labelled, monkeypatch):
    ns, ds, lb = labelled
    from wl_helpers import train_task
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    task = train_task(ns, lb, classes=["setosa", "versicolor"])
    code, r = execute(train.main, task, storage)
    assert code == 1 and r["error"].startswith("train split has label(s) not in classes: virginica")
    bad = dict(lb["splits"]["train"], digest="sha256:" + "0" * 64)
    task = train_task(ns, lb)
    task["splits"]["train"] = bad
    code, r = execute(train.main, task, storage)
    assert code == 1 and r["error"].startswith("train split digest mismatch")


def eval_task(ns, train_result, test_ref, **over):
    t = {"model": dict(train_result["model"]), "test": dict(test_ref), "idColumn": "id", "labelColumn": "label",
         "resultUri": f"s3://loom/{ns}/results/eval.json"}
    t.update(over)
    return t


def test_evaluate_scores(trained, storage):
    ns, lb, result, _ = trained
    code, r = execute(evaluate.main, eval_task(ns, result, lb["splits"]["test"]), storage)
    assert code == 0, r
    assert r["rows"] == lb["splits"]["test"]["rows"]
    assert r["classes"] == lb["classes"]
    assert {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss", "ece",
            "latency_p99_ms"} <= set(r["metrics"])
    assert r["metrics"]["accuracy"] > 0.8
    cm = np.array(r["confusionMatrix"])
    assert cm.shape == (3, 3) and cm.sum() == r["rows"]
    assert abs(np.trace(cm) / cm.sum() - r["metrics"]["accuracy"]) < 1e-6
    assert storage.get_json(f"s3://loom/{ns}/results/eval.json") == r


def test_evaluate_digest_mismatch(trained, storage):
    ns, lb, result, _ = trained
    wrong = "sha256:" + "1" * 64
    task = eval_task(ns, result, lb["splits"]["test"])
    task["model"]["digest"] = wrong
    code, r = execute(evaluate.main, task, storage)
    assert code == 1 and r["error"].startswith(f"model digest mismatch: {result['model']['uri']} has sha256:")
    assert r["error"].endswith(f"expected {wrong}")

    task = eval_task(ns, result, lb["splits"]["test"])
    task["test"]["digest"] = wrong
    code, r = execute(evaluate.main, task, storage)
    assert code == 1 and r["error"].startswith("test split digest mismatch")

    # a tampered model object fails even with the recorded digest
    copy = f"s3://loom/{ns}/tampered/model.onnx"
    storage.put_bytes(copy, storage.get_bytes(result["model"]["uri"]) + b"\0")
    task = eval_task(ns, result, lb["splits"]["test"])
    task["model"]["uri"] = copy
    code, r = execute(evaluate.main, task, storage)
    assert code == 1 and "model digest mismatch" in r["error"]
