"""Trainer step time: Loom's training loop (loom.workloads.train.Trainer) against a bare
PyTorch loop on the same model, data, batch size and optimizer, in this process.

    python benchmarks/train_step.py                 # CPU, a few seconds per run
    python benchmarks/train_step.py --rows 50000 --hidden 512 --epochs 3

Loom's loop runs as in a pod: the SIGTERM flag, autocast context, step and epoch
bookkeeping, checkpoints every --every-steps steps and throttled progress, both written
to a local directory (the same Checkpointer/ProgressWriter code as to S3). A second Loom
figure runs with checkpoints and progress off (the loop's own overhead). Runs alternate
and the median of --repeats is reported. Ratio = Loom step time / bare step time (goal <= 1.05).
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
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            (loss / len(yb)).backward()
            opt.step()
            steps += 1
    return time.perf_counter() - t0, steps


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
        t0 = time.perf_counter()
        state = trainer.run()
        return time.perf_counter() - t0, state.step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--every-steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier figures on a shared machine)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    bare(args)  # warm up allocator and kernels
    times = {"bare": [], "loom": [], "loomNoIO": []}
    steps = {}
    for _ in range(args.repeats):  # alternate, so drift in machine load hits all three alike
        for name, fn in (("bare", lambda: bare(args)), ("loom", lambda: loom(args, True)),
                         ("loomNoIO", lambda: loom(args, False))):
            t, n = fn()
            times[name].append(t / n)
            steps[name] = n
    assert steps["bare"] == steps["loom"] == steps["loomNoIO"], steps
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": "cpu", "threads": args.threads, "steps": steps["bare"],
        "config": {k: getattr(args, k) for k in ("rows", "features", "hidden", "classes", "batch_size", "epochs",
                                                  "every_steps", "repeats")},
        "stepMs": {k: round(v * 1e3, 4) for k, v in med.items()},
        "ratio": round(med["loom"] / med["bare"], 4),
        "ratioNoIO": round(med["loomNoIO"] / med["bare"], 4),
        "goal": "<= 1.05",
    }
    print(json.dumps(result, indent=2))
    print(f"ratio (Loom / bare) = {result['ratio']} with checkpoints every {args.every_steps} steps and progress; "
          f"{result['ratioNoIO']} without")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
