"""Fixtures for the workload tests: an embedded S3 and the quickstart data in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from loom.local.s3 import EmbeddedS3
from loom.workloads import ingest, label
from loom.workloads._task import execute

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "quickstart" / "data"


@pytest.fixture(scope="session")
def s3():
    server = EmbeddedS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def storage(s3):
    return s3.storage()


@pytest.fixture
def ns():
    """A fresh namespace prefix per test (moto state is shared by the session)."""
    return "t-" + uuid.uuid4().hex[:8]


def upload_quickstart(storage, ns: str) -> dict[str, str]:
    iris = f"s3://loom/{ns}/sources/iris.csv"
    ann = f"s3://loom/{ns}/sources/annotations.csv"
    storage.put_file(iris, DATA / "iris.csv")
    storage.put_file(ann, DATA / "annotations.csv")
    return {"iris": iris, "annotations": ann}


def ingest_task(ns: str, sources: list[str], **over) -> dict:
    task = {
        "namespace": ns,
        "name": "iris",
        "sources": [{"uri": u, "format": "csv", "provenance": {"owner": "test"}} for u in sources],
        "idColumn": "id",
        "labelColumn": None,
        "split": {"strategy": "random", "seed": 42, "train": 0.7, "validation": 0.15, "test": 0.15},
        "outputPrefix": f"s3://loom/{ns}/datasets/iris/",
        "resultUri": f"s3://loom/{ns}/results/ingest-{uuid.uuid4().hex[:6]}.json",
    }
    task.update(over)
    return task


def label_task(ns: str, dataset_result: dict, annotations: list[str], **over) -> dict:
    task = {
        "dataset": {"version": dataset_result["version"], "idColumn": "id", "splits": dataset_result["splits"]},
        "annotations": [{"uri": u, "format": "csv"} for u in annotations],
        "labelColumn": "label",
        "metric": "auto",
        "minAgreement": 0.6,
        "adjudication": "majority",
        "outputPrefix": f"s3://loom/{ns}/labeljobs/iris/",
        "resultUri": f"s3://loom/{ns}/results/label-{uuid.uuid4().hex[:6]}.json",
    }
    task.update(over)
    return task


@pytest.fixture
def labelled(storage, ns):
    """The quickstart data ingested and labelled: (namespace, ingest result, label result)."""
    uris = upload_quickstart(storage, ns)
    code, ds = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0, ds
    code, lb = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert code == 0 and lb["passed"], lb
    return ns, ds, lb


def run_module(module: str, task: dict, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "LOOM_TASK": json.dumps(task)}
    return subprocess.run([sys.executable, "-m", module], env=full, capture_output=True, text=True,
                          timeout=timeout)


def train_task(ns: str, label_result: dict, **over) -> dict:
    task = {
        "splits": {"train": label_result["splits"]["train"], "validation": label_result["splits"]["validation"]},
        "idColumn": "id",
        "labelColumn": "label",
        "classes": label_result["classes"],
        "model": {"type": "mlp", "hiddenUnits": 16},
        "hyperparameters": {"epochs": 20, "learningRate": 0.05, "batchSize": 32, "seed": 0},
        "outputPrefix": f"s3://loom/{ns}/trainingruns/iris/",
        "resultUri": f"s3://loom/{ns}/results/train-{uuid.uuid4().hex[:6]}.json",
    }
    task.update(over)
    return task


@pytest.fixture(scope="session")
def trained(s3, storage):
    """Ingest, label, then train with WORLD_SIZE=2: two real DDP processes (gloo).

    Returns (namespace, label result, train result, [stderr of rank 0, rank 1]).
    """
    from loom.local.s3 import free_port

    ns = "trained-" + uuid.uuid4().hex[:6]
    uris = upload_quickstart(storage, ns)
    code, ds = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0, ds
    code, lb = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert code == 0, lb
    task = train_task(ns, lb)
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, **s3.env(), "LOOM_TASK": json.dumps(task), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0"}
        procs.append(subprocess.Popen([sys.executable, "-m", "loom.workloads.train"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        _, err = p.communicate(timeout=180)
        outs.append((p.returncode, err))
    assert [c for c, _ in outs] == [0, 0], "\n\n".join(e[-3000:] for _, e in outs)
    result = storage.get_json(task["resultUri"])
    return ns, lb, result, [e for _, e in outs]
