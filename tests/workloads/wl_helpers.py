"""Task builders and helpers shared by the workload tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "quickstart" / "data"


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


def run_module(module: str, task: dict, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "LOOM_TASK": json.dumps(task)}
    return subprocess.run([sys.executable, "-m", module], env=full, capture_output=True, text=True,
                          timeout=timeout)
