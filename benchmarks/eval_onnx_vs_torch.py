"""ONNX Runtime against torch eager on the same model, batch by batch, in one run.

The model is Loom's trainer MLP (loom.workloads.train), exported to ONNX by the
trainer's own export_onnx (checked against torch there). For each batch size
both runtimes score the same random batch, calls interleaved; we report p50/p99 per call and the
ratio torch/onnxruntime (above 1: ONNX Runtime is faster). Threads are pinned to
the same count for both. JSON goes to stdout and benchmarks/results/eval_onnx_vs_torch.json.

    python benchmarks/eval_onnx_vs_torch.py [--batch-sizes 1,32,256,4096] [--iterations 300]
        [--features 4] [--hidden 16] [--classes 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))


def paired_timings(fns, iterations: int, warmup: int) -> list[np.ndarray]:
    """Time the callables interleaved, alternating who goes first, so both see the same machine load."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out = [np.empty(iterations) for _ in fns]
    for i in range(iterations):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            start = time.perf_counter()
            fns[k]()
            out[k][i] = time.perf_counter() - start
    return [o * 1000.0 for o in out]


def stats(ms: np.ndarray, batch: int) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 5), "p99_ms": round(float(np.percentile(ms, 99)), 5),
            "mean_ms": round(float(ms.mean()), 5), "rows_per_s": round(float(batch / (ms.mean() / 1000.0)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="1,32,256,4096")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_onnx_vs_torch.json"))
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from loom.workloads.train import build_model, export_onnx

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    features = [f"f{i}" for i in range(args.features)]
    classes = [f"c{i}" for i in range(args.classes)]
    rng = np.random.default_rng(0)
    x_fit = rng.normal(size=(256, args.features)).astype(np.float32)
    model = build_model(args.features, args.hidden, args.classes, x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-6)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, args.features, features, classes, path, x_fit[:16])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        x = rng.normal(size=(batch, args.features)).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                return torch.softmax(model(xt), dim=-1)

        def run_ort():
            return session.run(["probabilities"], {"input": x})[0]

        assert np.allclose(run_torch().numpy(), run_ort(), atol=1e-5), "ONNX and torch disagree"
        ort_ms, torch_ms = paired_timings([run_ort, run_torch], args.iterations, args.warmup)
        o, t = stats(ort_ms, batch), stats(torch_ms, batch)
        results.append({"batch_size": batch, "onnxruntime": o, "torch_eager": t,
                        "ratio_p50_torch_over_ort": round(t["p50_ms"] / o["p50_ms"], 3),
                        "ratio_p99_torch_over_ort": round(t["p99_ms"] / o["p99_ms"], 3)})
        print(f"batch {batch:>5}: onnxruntime p50 {o['p50_ms']:.4f} ms p99 {o['p99_ms']:.4f} ms | "
              f"torch p50 {t['p50_ms']:.4f} ms p99 {t['p99_ms']:.4f} ms | torch/ort p50 x{results[-1]['ratio_p50_torch_over_ort']}",
              file=sys.stderr)

    report = {
        "benchmark": "eval_onnx_vs_torch",
        "model": {"type": "mlp", "features": args.features, "hidden": args.hidden, "classes": args.classes},
        "iterations": args.iterations, "warmup": args.warmup, "threads": args.threads,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
