"""Trainer step time: Loom's training loop (loom.workloads.train.Trainer) against a bare
PyTorch loop on the same model, data, batch size and optimizer, in this process.

    python benchmarks/train_step.py                 # CPU, a few seconds per run
    python benchmarks/train_step.py --rows 20000 --hidden 256 --batch-size 64 --every-steps 200   # ~1 ms steps

Loom's loop runs as in a pod: the SIGTERM flag, autocast context, step and epoch
bookkeeping, checkpoints every --every-steps steps and throttled progress, both written
to a local directory (the same Checkpointer/ProgressWriter code as to S3). A second Loom
figure runs with checkpoints and progress off (the loop's own overhead). Runs alternate;
for each, the fastest of --repeats is kept (as timeit does: on a shared machine, slower
runs measure the neighbours), both in wall time and in this process's CPU time.
Ratio = Loom step time / bare step time (goal <= 1.05).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

from loom.workloads.checkpoint import Checkpointer  # noqa: E402
from loom.workloads.progress import ProgressWriter  # noqa: E402
from loom.workloads.train import LoopConfig, Trainer, build_model, set_determinism  # noqa: E402


class DirStorage:
    """Object storage on a local directory: the put/get calls Checkpointer and ProgressWriter make."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, uri: str) -> Path:
        p = self.root / uri.removeprefix("s3://")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def put_bytes(self, uri: str, data: bytes, content_type: str = "") -> str:
        self._path(uri).write_bytes(data)
        return uri

    def put_json(self, uri: str, obj) -> str:
        return self.put_bytes(uri, json.dumps(obj).encode())

    def get_bytes(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def get_json(self, uri: str):
        return json.loads(self.get_bytes(uri))

    def exists(self, uri: str) -> bool:
        return self._path(uri).exists()

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)


def setup(args, seed=0):
    set_determinism(seed, False)
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.rows)
    x = (rng.normal(size=(args.rows, args.features)) + y[:, None]).astype(np.float32)
    model = build_model(args.features, args.hidden, args.classes, x.mean(0), x.std(0))
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=seed)
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, loader, sampler, opt


def bare(args) -> tuple[float, int]:
    model, loader, sampler, opt = setup(args)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            (loss / len(yb)).backward()
            opt.step()
            steps += 1
    return time.perf_counter() - t0, time.process_time() - c0, steps


def loom(args, io: bool) -> tuple[float, int]:
    model, loader, sampler, opt = setup(args)
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        storage = DirStorage(Path(tmp))
        prefix = "s3://loom/bench/run/"
        trainer = Trainer(model=model, net=model, optimiser=opt, loader=loader, sampler=sampler,
                          device=torch.device("cpu"), cfg=LoopConfig(epochs=args.epochs, precision="fp32"),
                          world=1, rank=0,
                          checkpointer=Checkpointer(storage, prefix, args.every_steps) if io else None,
                          progress=ProgressWriter(storage, prefix, 0) if io else None, val=None)
        t0, c0 = time.perf_counter(), time.process_time()
        state = trainer.run()
        return time.perf_counter() - t0, time.process_time() - c0, state.step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=40000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--every-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier figures on a shared machine)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    bare(args)  # warm up allocator and kernels
    wall = {"bare": [], "loom": [], "loomNoIO": []}
    cpu = {"bare": [], "loom": [], "loomNoIO": []}
    steps = {}
    runs = [("bare", lambda: bare(args)), ("loom", lambda: loom(args, True)), ("loomNoIO", lambda: loom(args, False))]
    for r in range(args.repeats):  # interleaved, order rotated: drift in machine load hits all three alike
        for name, fn in runs[r % 3:] + runs[:r % 3]:
            t, c, n = fn()
            wall[name].append(t / n)
            cpu[name].append(c / n)
            steps[name] = n
    assert steps["bare"] == steps["loom"] == steps["loomNoIO"], steps
    # one checkpoint's cost (snapshot, torch.save, sha256, write, index), to size everySteps
    model, loader, sampler, opt = setup(args)
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        trainer = Trainer(model=model, net=model, optimiser=opt, loader=loader, sampler=sampler,
                          device=torch.device("cpu"), cfg=LoopConfig(epochs=1), world=1, rank=0,
                          checkpointer=Checkpointer(DirStorage(Path(tmp)), "s3://loom/b/", 1))
        trainer.run()  # optimizer state exists, as in a real checkpoint
        ckpt_s = []
        for i in range(5):
            trainer.state.step += 1
            t0 = time.perf_counter()
            trainer.save()
            ckpt_s.append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    result = {
        "device": "cpu", "threads": args.threads, "steps": steps["bare"],
        "config": {k: getattr(args, k) for k in ("rows", "features", "hidden", "classes", "batch_size", "epochs",
                                                  "every_steps", "repeats")},
        "stepMs": {k: round(v * 1e3, 4) for k, v in best.items()},
        "stepCpuMs": {k: round(v * 1e3, 4) for k, v in best_cpu.items()},
        "stepMsMedian": {k: round(statistics.median(v) * 1e3, 4) for k, v in wall.items()},
        "ratio": round(best["loom"] / best["bare"], 4),
        "ratioNoIO": round(best["loomNoIO"] / best["bare"], 4),
        "ratioCpu": round(best_cpu["loom"] / best_cpu["bare"], 4),
        "checkpointMs": round(min(ckpt_s) * 1e3, 3),
        "goal": "<= 1.05",
    }
    print(json.dumps(result, indent=2))
    print(f"ratio (Loom / bare step time) = {result['ratio']} wall, {result['ratioCpu']} CPU, with checkpoints every "
          f"{args.every_steps} steps and progress; {result['ratioNoIO']} wall without; one checkpoint "
          f"{result['checkpointMs']} ms")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
