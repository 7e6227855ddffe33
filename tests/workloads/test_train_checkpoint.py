"""The trainer's fault tolerance and reproducibility: checkpoints, resume, SIGTERM,
determinism, early stopping, precision. CPU only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from loom.workloads import train
from loom.workloads._task import execute
from loom.workloads.checkpoint import Checkpointer

from wl_helpers import train_task


def task_for(ns, lb, **over):
    t = train_task(ns, lb, **over)
    t["outputPrefix"] = f"s3://loom/{ns}/models/{uuid.uuid4().hex[:8]}/"
    return t


class StopAfter:
    """Plays SIGTERM arriving after ``n`` optimizer steps (the loop reads ``.set`` once per step)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.checks = 0

    @property
    def set(self) -> bool:
        self.checks += 1
        return self.checks >= self.n


def test_checkpoints_every_n_steps_and_keeps_the_latest(storage, labelled):
    ns, _, lb = labelled
    task = task_for(ns, lb, checkpoint={"everySteps": 7, "keep": 2},
                    hyperparameters={"epochs": 5, "learningRate": 0.05, "batchSize": 16, "seed": 1})
    code, r = execute(train.main, task, storage)
    assert code == 0, r
    assert r["steps"] == r["totalSteps"] and r["resumes"] == []
    steps = [c["step"] for c in r["checkpoints"]]
    # every 7 steps, plus the final state; only the newest two remain
    assert steps[-1] == r["steps"] and len(steps) == 2 and steps[0] % 7 == 0
    index = storage.get_json(task["outputPrefix"] + "checkpoints/latest.json")
    assert index["latest"]["step"] == r["steps"]
    progress = storage.get_json(task["outputPrefix"] + "progress.json")
    assert progress["step"] == r["steps"] and progress["totalSteps"] == r["totalSteps"]


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(storage, labelled):
    """Stopped at step 13 (as by SIGTERM), then started again: it resumes from the checkpoint
    taken at the stop, the step count continues, and the weights equal a run never stopped."""
    ns, _, lb = labelled
    hp = {"epochs": 6, "learningRate": 0.05, "batchSize": 16, "seed": 3}
    whole = task_for(ns, lb, hyperparameters=hp, deterministic=True, checkpoint={"everySteps": 10})
    code, ref = execute(train.main, whole, storage)
    assert code == 0, ref

    task = task_for(ns, lb, hyperparameters=hp, deterministic=True, checkpoint={"everySteps": 10})
    with pytest.raises(train.Interrupted):
        train.main(task, storage, StopAfter(13))
    ckpt = Checkpointer(storage, task["outputPrefix"], 10)
    state, record = ckpt.load_latest()
    assert state["step"] == 13 and record["step"] == 13  # the emergency checkpoint, not the periodic one at 10
    code, r = execute(train.main, task, storage)
    assert code == 0, r
    assert r["resumes"] and r["resumes"][0]["step"] == 13
    assert r["steps"] == ref["steps"] == r["totalSteps"]
    assert r["model"]["digest"] == ref["model"]["digest"]  # bit-identical ONNX
    assert r["history"] == ref["history"]


def test_deterministic_runs_are_bit_identical(storage, labelled):
    ns, _, lb = labelled
    hp = {"epochs": 4, "learningRate": 0.05, "batchSize": 16, "seed": 7}
    digests = []
    for _ in range(2):
        code, r = execute(train.main, task_for(ns, lb, hyperparameters=hp, deterministic=True), storage)
        assert code == 0, r
        digests.append(r["model"]["digest"])
    assert digests[0] == digests[1]
    code, other = execute(train.main, task_for(ns, lb, hyperparameters={**hp, "seed": 8}, deterministic=True), storage)
    assert other["model"]["digest"] != digests[0]  # the seed matters: the test can fail


def test_early_stopping_on_validation(storage, labelled):
    ns, _, lb = labelled
    task = task_for(ns, lb, hyperparameters={"epochs": 300, "learningRate": 0.05, "batchSize": 32, "seed": 0},
                    earlyStopping={"metric": "val_loss", "patience": 2, "minDelta": 0.0})
    code, r = execute(train.main, task, storage)
    assert code == 0, r
    assert r["stoppedEarly"] and r["epochs"] < 300
    best = next(h for h in r["history"] if h["epoch"] == r["bestEpoch"])
    assert r["metrics"]["val_loss"] == best["val_loss"] == min(h["val_loss"] for h in r["history"])
    assert r["epochs"] - r["bestEpoch"] == 2  # patience epochs without improvement


def test_precision_bf16_on_cpu_and_fp16_refused(storage, labelled):
    ns, _, lb = labelled
    hp = {"epochs": 3, "learningRate": 0.05, "batchSize": 32, "seed": 0}
    code, r = execute(train.main, task_for(ns, lb, hyperparameters=hp, precision="bf16"), storage)
    assert code == 0 and r["precision"] == "bf16" and r["device"] == "cpu", r
    code, r = execute(train.main, task_for(ns, lb, hyperparameters=hp, precision="fp16"), storage)
    assert code == 1 and r["error"].startswith("precision fp16 needs a CUDA device"), r


def test_sigterm_checkpoints_exits_143_and_the_next_start_resumes(s3, storage, labelled):
    """A real process and a real SIGTERM (as a preemption sends): exit 143, no error published,
    a checkpoint at the step reached; the next start continues from it."""
    ns, _, lb = labelled
    task = task_for(ns, lb, hyperparameters={"epochs": 4000, "learningRate": 0.01, "batchSize": 8, "seed": 0},
                    checkpoint={"everySteps": 100000})
    env = {**os.environ, **s3.env(), "LOOM_TASK": json.dumps(task)}
    proc = subprocess.Popen([sys.executable, "-m", "loom.workloads.train"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        step = 0
        while time.monotonic() < deadline and step < 50:
            assert proc.poll() is None, proc.stderr.read()
            try:
                step = storage.get_json(task["outputPrefix"] + "progress.json")["step"]
            except Exception:
                pass
            time.sleep(0.1)
        assert step >= 50, "training made no progress"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == train.EXIT_RETRY, err[-2000:]
    assert not storage.exists(task["resultUri"])  # a stop to resume is not an error
    state, record = Checkpointer(storage, task["outputPrefix"], 1).load_latest()
    assert state["step"] >= step
    short = dict(task, hyperparameters=dict(task["hyperparameters"], epochs=state["epoch"] + 1))
    code, r = execute(train.main, short, storage)
    assert code == 0, r
    assert r["resumes"][0]["step"] == state["step"] and r["steps"] > state["step"]
