"""TrainingRun replica: PyTorch DDP training of an MLP on the numeric feature
columns, ONNX export on rank 0.

Env from the PyTorchJob controller: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK
(LOCAL_RANK optional). WORLD_SIZE unset or 1 -> a single process, no process
group. Backend: nccl when CUDA is available, else gloo. Optimiser: Adam.
The exported model standardises its input with the training statistics and
ends in a softmax: input ``input`` float32 [N, F] -> ``probabilities`` [N, C].
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backends.storage import Storage
from ..lineage.digest import sha256_file
from ._task import WorkloadError, join_uri, numeric_columns, read_split, require, run

log = logging.getLogger("loom.workloads.train")


def _rank_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE") or 1)
    rank = int(os.environ.get("RANK") or 0)
    local_rank = int(os.environ.get("LOCAL_RANK") or 0)
    if world < 1 or not 0 <= rank < world:
        raise WorkloadError(f"bad distributed env: RANK={rank} WORLD_SIZE={world}")
    return world, rank, local_rank


def prepare(df: pd.DataFrame, features: list[str], label_col: str, classes: list[str], name: str):
    missing = [c for c in features + [label_col] if c not in df.columns]
    if missing:
        raise WorkloadError(f"{name} split lacks column(s) {', '.join(missing)}")
    x = df[features].apply(pd.to_numeric, errors="coerce")
    if x.isna().any().any():
        bad = x.columns[x.isna().any()].tolist()
        raise WorkloadError(f"{name} split has non-numeric or empty values in feature column(s) {', '.join(bad)}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(df[label_col]) - set(index))
    if unknown:
        raise WorkloadError(f"{name} split has label(s) not in classes: {', '.join(map(str, unknown[:5]))}")
    y = df[label_col].map(index).to_numpy(dtype=np.int64)
    return x.to_numpy(dtype=np.float32), y


def build_model(n_features: int, hidden: int, n_classes: int, mean: np.ndarray, std: np.ndarray):
    import torch
    from torch import nn

    class Standardize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    return nn.Sequential(
        Standardize(),
        nn.Linear(n_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


def export_onnx(model, n_features: int, features: list[str], classes: list[str], path: Path,
                sample: np.ndarray) -> None:
    """Export logits->softmax model to ONNX, add metadata, check it against torch."""
    import onnx
    import onnxruntime as ort
    import torch
    from torch import nn

    class WithSoftmax(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input):  # noqa: A002 - the ONNX input name
            return torch.softmax(self.inner(input), dim=-1)

    wrapped = WithSoftmax(model).cpu().eval()
    example = torch.zeros(2, n_features, dtype=torch.float32)
    torch.onnx.export(
        wrapped,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["probabilities"],
        dynamic_shapes={"input": {0: torch.export.Dim("batch")}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = onnx.load(str(path))
    for key, value in (("loom.features", json.dumps(features)), ("loom.classes", json.dumps(classes))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"input": sample.astype(np.float32)})[0]
    with torch.no_grad():
        want = wrapped(torch.as_tensor(sample, dtype=torch.float32)).numpy()
    if not np.allclose(got, want, atol=1e-5, rtol=1e-4):
        raise WorkloadError(f"ONNX export check failed: max abs diff {float(np.abs(got - want).max()):.2e}")


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    world, rank, local_rank = _rank_info()
    splits = require(task, "splits")
    id_col = task.get("idColumn") or "id"
    label_col = task.get("labelColumn") or "label"
    classes = [str(c) for c in require(task, "classes")]
    if len(classes) < 2:
        raise WorkloadError(f"training needs at least 2 classes, got {classes}")
    model_spec = task.get("model") or {}
    if model_spec.get("type", "mlp") != "mlp":
        raise WorkloadError(f"unsupported model type {model_spec.get('type')!r} (only mlp)")
    hidden = int(model_spec.get("hiddenUnits", 16))
    hp = task.get("hyperparameters") or {}
    epochs = int(hp.get("epochs", 20))
    lr = float(hp.get("learningRate", 0.05))
    batch_size = int(hp.get("batchSize", 32))
    seed = int(hp.get("seed", 0))
    output_prefix = require(task, "outputPrefix")
    if epochs < 1 or batch_size < 1 or hidden < 1 or lr <= 0:
        raise WorkloadError("epochs, batchSize and hiddenUnits must be >= 1 and learningRate > 0")

    train_df = read_split(storage, require(splits, "train", "task.splits"), "train")
    val_df = read_split(storage, require(splits, "validation", "task.splits"), "validation")
    features = numeric_columns(train_df, exclude={id_col, label_col})
    if not features:
        raise WorkloadError("the train split has no numeric feature columns")
    x_train, y_train = prepare(train_df, features, label_col, classes, "train")
    x_val, y_val = prepare(val_df, features, label_col, classes, "validation")
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0

    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    distributed = world > 1
    if distributed:
        if use_cuda:
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        timeout = datetime.timedelta(seconds=int(os.environ.get("LOOM_DDP_TIMEOUT", "600")))
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank,
                                timeout=timeout)
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = build_model(len(features), hidden, len(classes), mean, std).to(device)
        net = DDP(model, device_ids=[local_rank] if use_cuda else None) if distributed else model
        dataset = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
        optimiser = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        x_val_t = torch.from_numpy(x_val).to(device)
        history = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            net.train()
            totals = torch.zeros(2, dtype=torch.float64, device=device)
            for xb, yb in loader:
                xb, yb = xb.to(device), yb.to(device)
                optimiser.zero_grad()
                loss = loss_fn(net(xb), yb)
                (loss / len(yb)).backward()
                optimiser.step()
                totals += torch.tensor([loss.item(), len(yb)], dtype=torch.float64, device=device)
            if distributed:
                dist.all_reduce(totals)
            epoch_loss = float(totals[0] / totals[1])
            if rank == 0:
                model.eval()
                with torch.no_grad():
                    pred = model(x_val_t).argmax(dim=1).cpu().numpy()
                val_acc = float((pred == y_val).mean())
                history.append({"epoch": epoch + 1, "loss": round(epoch_loss, 6), "val_accuracy": round(val_acc, 6)})
                log.info("epoch %d/%d loss %.4f val_accuracy %.4f", epoch + 1, epochs, epoch_loss, val_acc)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()

    if rank != 0:
        return None

    model = model.cpu().eval()
    metrics = {"train_loss": history[-1]["loss"], "val_accuracy": history[-1]["val_accuracy"]}
    with tempfile.TemporaryDirectory(prefix="loom-train-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, len(features), features, classes, path, x_val[: min(len(x_val), 16)])
        digest = sha256_file(path)
        model_uri = join_uri(output_prefix, "model.onnx")
        storage.put_file(model_uri, path)
    storage.put_json(join_uri(output_prefix, "metrics.json"),
                     {"metrics": metrics, "history": history, "model": {"uri": model_uri, "digest": digest}})
    return {
        "model": {"uri": model_uri, "digest": digest},
        "features": features,
        "classes": classes,
        "metrics": metrics,
        "history": history,
        "worldSize": world,
        "backend": backend,
    }


if __name__ == "__main__":
    run(main, rank_zero_writes=True)
