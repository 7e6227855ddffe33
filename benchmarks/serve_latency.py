"""Served latency through Loom's model server vs ONNX Runtime in-process, same model, same batch.

    python benchmarks/serve_latency.py [--batch 32] [--requests 500] [--hidden 64] [--features 16]

Baseline: onnxruntime.InferenceSession.run in this process. Served: `python -m
loom.workloads.serve` (KServe's ModelServer + loom's OnnxModel) on loopback, v2
protocol (POST /v2/models/<name>/infer, JSON tensors) over one keep-alive HTTP
connection, so the figure is the model server's own overhead (HTTP, JSON
(de)serialisation, KServe's request pipeline), not connection setup. One run;
prints JSON and writes benchmarks/results/serve_latency.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def mlp(features: int, hidden: int, classes: int, seed: int = 0) -> bytes:
    """An MLP shaped like the ones TrainingRun exports: input [N, F] -> probabilities [N, C]."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, hidden)).astype(np.float32)
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["ob"]), helper.make_node("Softmax", ["ob"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(classes, np.float32), "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for k, v in (("loom.features", [f"f{i}" for i in range(features)]), ("loom.classes", [f"c{i}" for i in range(classes)])):
        model.metadata_props.add(key=k, value=json.dumps(v))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "n": int(ms.size)}


def in_process(path: Path, x: np.ndarray, n: int, warmup: int) -> dict[str, float]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        sess.run(["probabilities"], {"input": x})
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(["probabilities"], {"input": x})
        out.append(time.perf_counter() - t0)
    return percentiles(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(model_dir: Path, x: np.ndarray, n: int, warmup: int) -> tuple[dict[str, float], np.ndarray]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "loom.workloads.serve", "--model_name", "bench", "--model_dir",
                             str(model_dir), "--http_port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                conn.request("GET", "/v2/models/bench/ready")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    break
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the model server did not become ready")
            time.sleep(0.2)
        body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.flatten().tolist()}]})
        headers = {"Content-Type": "application/json"}
        answer = None

        def once() -> None:
            nonlocal answer
            conn.request("POST", "/v2/models/bench/infer", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
            answer = data

        for _ in range(warmup):
            once()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            once()
            out.append(time.perf_counter() - t0)
        output = json.loads(answer)["outputs"][0]
        return percentiles(out), np.asarray(output["data"], np.float32).reshape(output["shape"])
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_latency.json"))
    args = ap.parse_args(argv)
    x = np.random.default_rng(1).standard_normal((args.batch, args.features)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(mlp(args.features, args.hidden, args.classes))
        base = in_process(path, x, args.requests, args.warmup)
        srv, probs = served(Path(tmp), x, args.requests, args.warmup)
        expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["probabilities"], {"input": x})[0]
    assert np.allclose(probs, expected, atol=1e-5), "the server's answer differs from ONNX Runtime's"
    result = {
        "benchmark": "serve_latency",
        "model": {"features": args.features, "hidden": args.hidden, "classes": args.classes},
        "batch": args.batch, "requests": args.requests, "warmup": args.warmup,
        "onnxruntime_in_process": base,
        "served_v2_http": srv,
        "ratio_p50": round(srv["p50_ms"] / base["p50_ms"], 2),
        "ratio_p99": round(srv["p99_ms"] / base["p99_ms"], 2),
        "overhead_p50_ms": round(srv["p50_ms"] - base["p50_ms"], 4),
        "host": {"python": platform.python_version(), "onnxruntime": ort.__version__, "cpus": os.cpu_count()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
