"""TrainingRun replica: PyTorch DDP training of an MLP on the numeric feature
columns, ONNX export on rank 0.

Env from the PyTorchJob controller: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK
(LOCAL_RANK optional). WORLD_SIZE unset or 1 -> a single process, no process
group. Backend: nccl when CUDA is available, else gloo. Optimiser: Adam.
The exported model standardises its input with the training statistics and
ends in a softmax: input ``input`` float32 [N, F] -> ``probabilities`` [N, C].

Fault tolerance: rank 0 checkpoints every ``checkpoint.everySteps`` steps, and also
when it is told to stop (SIGTERM: preemption, a gang restart) or loses a peer;
every rank resumes from the latest checkpoint on start. Such an exit uses code 143,
which the PyTorchJob's ExitCode restart policy retries; a trainer error exits 1
and is final.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import random
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backends.storage import Storage
from ..lineage.digest import sha256_file
from ._task import WorkloadError, execute, join_uri, load_task, numeric_columns, read_split, require
from .checkpoint import Checkpointer, rng_state, set_rng_state
from .progress import ProgressWriter

log = logging.getLogger("loom.workloads.train")

#: Exit code of a trainer that stopped to be restarted (SIGTERM, a lost peer): 128 + SIGTERM.
EXIT_RETRY = 143


class Interrupted(Exception):
    """Training stopped before the end and should resume from a checkpoint."""


class StopFlag:
    """Set by SIGTERM; the loop checks it after each step (a handler that raised would
    tear a step in half)."""

    def __init__(self) -> None:
        self.set = False

    def install(self) -> None:
        def handler(signum, frame):  # noqa: ARG001
            self.set = True
        signal.signal(signal.SIGTERM, handler)


def is_peer_loss(exc: BaseException) -> bool:
    """A collective failed because another rank died: restartable, not a bug."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        k in text for k in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo", "NCCL",
                            "Socket Timeout", "timed out"))


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the resolved training configuration's canonical JSON."""
    return "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed every RNG; with ``deterministic``, refuse nondeterministic kernels too."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def autocast_for(precision: str, device: Any):
    """The autocast context of ``precision`` on ``device``, or a clear refusal."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16":
        if device.type != "cuda":
            raise WorkloadError("precision fp16 needs a CUDA device and this pod has none; use bf16 or fp32 on CPU")
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise WorkloadError(f"precision bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    raise WorkloadError(f"unknown precision {precision!r} (fp32, bf16, fp16)")


@dataclass
class LoopConfig:
    epochs: int
    precision: str = "fp32"
    early_stopping: dict[str, Any] | None = None  # {"metric", "patience", "minDelta"}


@dataclass
class LoopState:
    """Everything a checkpoint holds beyond the model and optimizer."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of ``epoch`` already done
    epoch_totals: list[float] = field(default_factory=lambda: [0.0, 0.0])  # loss sum, rows (this rank)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False


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


def validate(model, x_val_t, y_val_t, loss_fn) -> tuple[float, float]:
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(x_val_t).float()
        loss = float(loss_fn(logits, y_val_t)) / max(1, len(y_val_t))
        acc = float((logits.argmax(dim=1) == y_val_t).float().mean())
    return loss, acc


class Trainer:
    """The training loop: DDP steps, checkpoints, progress, early stopping, resume."""

    def __init__(self, *, model, net, optimiser, loader, sampler, device, cfg: LoopConfig, world: int, rank: int,
                 checkpointer: Checkpointer | None = None, progress: ProgressWriter | None = None,
                 val: tuple | None = None, stop: StopFlag | None = None) -> None:
        import torch
        from torch import nn

        self.model, self.net, self.optimiser = model, net, optimiser
        self.loader, self.sampler, self.device = loader, sampler, device
        self.cfg, self.world, self.rank = cfg, world, rank
        self.checkpointer, self.progress, self.val = checkpointer, progress, val
        self.stop = stop or StopFlag()
        self.loss_fn = nn.CrossEntropyLoss(reduction="sum")
        self.autocast = autocast_for(cfg.precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.state = LoopState()
        self.best_model: dict[str, Any] | None = None
        self.resumed_from: dict[str, Any] | None = None
        self._losses: list = []  # this epoch's step losses not yet folded into state.epoch_totals

    # -- checkpoints --------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        st = self.state
        snap = {
            "step": st.step, "epoch": st.epoch, "batch_in_epoch": st.batch_in_epoch,
            "epoch_totals": list(st.epoch_totals), "history": st.history, "best": st.best,
            "best_epoch": st.best_epoch, "bad_epochs": st.bad_epochs,
            "model": self.model.state_dict(), "optimizer": self.optimiser.state_dict(), "rng": rng_state(),
        }
        if self.best_model is not None:
            snap["best_model"] = self.best_model
        if self.scaler is not None:
            snap["scaler"] = self.scaler.state_dict()
        return snap

    def save(self) -> dict[str, Any] | None:
        if self.rank != 0 or self.checkpointer is None or self.checkpointer.last_step == self.state.step:
            return None
        record = self.checkpointer.save(self.snapshot())
        log.info("checkpoint at step %d: %s", record["step"], record["uri"])
        return record

    def resume(self) -> dict[str, Any] | None:
        """Load the latest checkpoint, if the run has one (every rank reads the same)."""
        if self.checkpointer is None:
            return None
        found = self.checkpointer.load_latest()
        if found is None:
            return None
        snap, record = found
        self.model.load_state_dict(snap["model"])
        self.optimiser.load_state_dict(snap["optimizer"])
        if self.scaler is not None and "scaler" in snap:
            self.scaler.load_state_dict(snap["scaler"])
        set_rng_state(snap["rng"])
        self.best_model = snap.get("best_model")
        self.state = LoopState(step=int(snap["step"]), epoch=int(snap["epoch"]),
                               batch_in_epoch=int(snap["batch_in_epoch"]),
                               epoch_totals=[float(v) for v in snap["epoch_totals"]], history=list(snap["history"]),
                               best=snap.get("best"), best_epoch=snap.get("best_epoch"),
                               bad_epochs=int(snap.get("bad_epochs") or 0))
        self.resumed_from = {"step": self.state.step, "epoch": self.state.epoch, "checkpoint": record["uri"],
                             "digest": record["digest"]}
        log.info("resumed from step %d (epoch %d) of %s", self.state.step, self.state.epoch, record["uri"])
        return self.resumed_from

    # -- the loop -------------------------------------------------------------
    def step_once(self, xb, yb) -> None:
        st = self.state
        self.optimiser.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss_fn(self.net(xb).float(), yb)
        scaled = loss / len(yb)
        if self.scaler is not None:
            self.scaler.scale(scaled).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
        else:
            scaled.backward()
            self.optimiser.step()
        # The step is complete only here: a checkpoint taken now is consistent. The loss stays
        # on the device (no sync per step) until the next fold.
        self._losses.append(loss.detach())
        st.epoch_totals[1] += len(yb)
        st.step += 1
        st.batch_in_epoch += 1

    def run(self) -> LoopState:
        import torch
        import torch.distributed as dist

        st = self.state
        distributed = self.world > 1
        self._losses = []
        while st.epoch < self.cfg.epochs and not st.stopped_early:
            self.sampler.set_epoch(st.epoch)
            self.net.train()
            skip = st.batch_in_epoch  # batches of this epoch done before a resume
            for i, (xb, yb) in enumerate(self.loader):
                if i < skip:
                    continue
                xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
                self.step_once(xb, yb)
                if self.progress is not None:
                    self.progress.add_samples(len(yb) * self.world)
                if self.checkpointer is not None and self.checkpointer.due(st.step):
                    self._fold_loss()
                    self.save()
                if self.stop.set:
                    raise Interrupted("SIGTERM")
                if self.progress is not None and self.rank == 0 and self.progress.due():
                    self._fold_loss()
                    self.progress.write(step=st.step, epoch=st.epoch,
                                        loss=st.epoch_totals[0] / max(1.0, st.epoch_totals[1]))
            self._fold_loss()
            totals = torch.tensor(st.epoch_totals, dtype=torch.float64, device=self.device)
            if distributed:
                dist.all_reduce(totals)
            epoch_loss = float(totals[0] / totals[1])
            self.end_epoch(epoch_loss)
        self._fold_loss()
        return st

    def _fold_loss(self) -> None:
        """Move the steps' on-device losses into the (checkpointed) epoch totals; one sync."""
        import torch

        if self._losses:
            self.state.epoch_totals[0] += float(torch.stack(self._losses).double().sum())
            self._losses = []

    def end_epoch(self, epoch_loss: float) -> None:
        import torch
        import torch.distributed as dist

        st = self.state
        stop = torch.zeros(1, device=self.device)
        if self.rank == 0:
            entry = {"epoch": st.epoch + 1, "loss": round(epoch_loss, 6)}
            if self.val is not None:
                val_loss, val_acc = validate(self.model, *self.val, self.loss_fn)
                entry.update({"val_loss": round(val_loss, 6), "val_accuracy": round(val_acc, 6)})
            st.history.append(entry)
            log.info("epoch %d/%d %s", st.epoch + 1, self.cfg.epochs, entry)
            if self.cfg.early_stopping and self.val is not None:
                stop[0] = float(self.judge_early_stop(entry))
        if self.world > 1 and self.cfg.early_stopping:
            dist.broadcast(stop, src=0)  # every rank stops together
        st.stopped_early = bool(stop[0])
        st.epoch += 1
        st.batch_in_epoch = 0
        st.epoch_totals = [0.0, 0.0]
        if self.progress is not None and self.rank == 0:
            self.progress.write(step=st.step, epoch=st.epoch, loss=epoch_loss, force=True)

    def judge_early_stop(self, entry: dict[str, Any]) -> bool:
        es, st = self.cfg.early_stopping, self.state
        metric = es.get("metric", "val_loss")
        value = entry[metric]
        sign = -1.0 if metric == "val_loss" else 1.0  # higher is better after the sign
        if st.best is None or sign * (value - st.best) > float(es.get("minDelta", 0.0)):
            st.best, st.best_epoch, st.bad_epochs = value, entry["epoch"], 0
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        st.bad_epochs += 1
        if st.bad_epochs >= int(es.get("patience", 3)):
            log.info("early stopping after epoch %d: %s has not improved for %d epochs (best %s at epoch %s)",
                     entry["epoch"], metric, st.bad_epochs, st.best, st.best_epoch)
            return True
        return False


def main(task: dict[str, Any], storage: Storage, stop: StopFlag | None = None) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist
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
    precision = task.get("precision") or "fp32"
    deterministic = bool(task.get("deterministic"))
    early = task.get("earlyStopping")
    ckpt = task.get("checkpoint") or {}
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
    autocast_for(precision, device)  # refuse an unsupported precision before any work
    distributed = world > 1
    if distributed:
        if use_cuda:
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        timeout = datetime.timedelta(seconds=int(os.environ.get("LOOM_DDP_TIMEOUT", "600")))
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank,
                                timeout=timeout)
    checkpointer = Checkpointer(storage, output_prefix, int(ckpt.get("everySteps", 50)), int(ckpt.get("keep", 2)))
    per_rank = -(-len(x_train) // world)
    total_steps = epochs * -(-per_rank // batch_size)
    progress = ProgressWriter(storage, output_prefix, total_steps) if rank == 0 else None
    try:
        set_determinism(seed, deterministic)
        model = build_model(len(features), hidden, len(classes), mean, std).to(device)
        net = DDP(model, device_ids=[local_rank] if use_cuda else None) if distributed else model
        dataset = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator)
        optimiser = torch.optim.Adam(net.parameters(), lr=lr)
        val = (torch.from_numpy(x_val).to(device), torch.from_numpy(y_val).to(device)) if rank == 0 else None
        trainer = Trainer(model=model, net=net, optimiser=optimiser, loader=loader, sampler=sampler, device=device,
                          cfg=LoopConfig(epochs=epochs, precision=precision, early_stopping=early), world=world,
                          rank=rank, checkpointer=checkpointer, progress=progress, val=val, stop=stop)
        resumed = trainer.resume()
        resumes: list[dict[str, Any]] = []
        if rank == 0:
            with contextlib.suppress(Exception):
                resumes = list(storage.get_json(progress.uri).get("resumes") or []) if resumed else []
            if resumed:
                resumes.append(resumed)
            progress.resumes = resumes
            progress.write(step=trainer.state.step, epoch=trainer.state.epoch, loss=None, force=True)
        try:
            state = trainer.run()
        except BaseException as exc:
            if isinstance(exc, Interrupted) or (distributed and is_peer_loss(exc)):
                # The step in flight never finished: the state after the last full step is saved.
                trainer._fold_loss()
                trainer.save()
                raise Interrupted(f"{exc}") from exc
            raise
        if rank == 0 and checkpointer.last_step != state.step:
            trainer.save()  # the final state: a rerun of the same generation does not train again
    finally:
        if distributed and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    if rank != 0:
        return None

    if trainer.best_model is not None and early:
        model.load_state_dict(trainer.best_model)  # early stopping keeps the best epoch's weights
    model = model.cpu().eval()
    history = state.history
    final = next((h for h in reversed(history) if h["epoch"] == state.best_epoch), history[-1]) \
        if early and state.best_epoch else history[-1]
    metrics = {"train_loss": final["loss"], "val_accuracy": final["val_accuracy"], "val_loss": final["val_loss"]}
    config = {"model": model_spec, "hyperparameters": hp, "precision": precision, "deterministic": deterministic,
              "earlyStopping": early, "worldSize": world}
    with tempfile.TemporaryDirectory(prefix="loom-train-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, len(features), features, classes, path, x_val[: min(len(x_val), 16)])
        digest = sha256_file(path)
        model_uri = join_uri(output_prefix, "model.onnx")
        storage.put_file(model_uri, path)
    progress.write(step=state.step, epoch=state.epoch, loss=history[-1]["loss"], force=True)
    result = {
        "model": {"uri": model_uri, "digest": digest},
        "features": features,
        "classes": classes,
        "metrics": metrics,
        "history": history,
        "worldSize": world,
        "backend": backend,
        "device": device.type,
        "precision": precision,
        "deterministic": deterministic,
        "seed": seed,
        "steps": state.step,
        "totalSteps": total_steps,
        "epochs": state.epoch,
        "stoppedEarly": state.stopped_early,
        "bestEpoch": state.best_epoch,
        "checkpoints": checkpointer.records,
        "resumes": resumes,
        "configHash": config_hash(config),
        "gitCommit": os.environ.get("LOOM_GIT_COMMIT") or None,
        "torch": torch.__version__,
    }
    storage.put_json(join_uri(output_prefix, "metrics.json"),
                     {"metrics": metrics, "history": history, "model": result["model"]})
    return result


def entrypoint() -> None:
    """``python -m loom.workloads.train``: like the other workloads, except that a stop to be
    resumed (SIGTERM, a lost peer) exits 143 without publishing an error: the gang restarts."""
    logging.basicConfig(level=os.environ.get("LOOM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    stop = StopFlag()
    stop.install()
    try:
        task = load_task()
        storage = Storage.from_env()
    except Exception as exc:  # noqa: BLE001
        print(f"loom: {exc}", file=sys.stderr)
        sys.exit(1)

    interrupted: list[BaseException] = []

    def guarded(t: dict[str, Any], s: Storage) -> dict[str, Any] | None:
        try:
            return main(t, s, stop)
        except Interrupted as exc:
            interrupted.append(exc)
            return None

    rank0 = int(os.environ.get("RANK") or 0) == 0
    code, _ = execute(guarded, task, storage, publish_errors=rank0)
    if interrupted:
        print(f"loom: training interrupted ({interrupted[0]}); exiting {EXIT_RETRY} to resume from the latest checkpoint",
              file=sys.stderr)
        sys.exit(EXIT_RETRY)
    sys.exit(code)


if __name__ == "__main__":
    entrypoint()
