"""Inference latency and throughput of an ONNX Runtime session at one batch size.

The batch is built from the test rows (tiled when there are fewer rows than the
batch), so timing covers real inputs. Each timed call is one session.run.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np


def batch_of(x: np.ndarray, batch_size: int) -> np.ndarray:
    reps = -(-batch_size // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:batch_size], dtype=np.float32)


def summarise(seconds: list[float], batch_size: int) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "latency_p50_ms": round(float(np.percentile(ms, 50)), 6),
        "latency_p95_ms": round(float(np.percentile(ms, 95)), 6),
        "latency_p99_ms": round(float(np.percentile(ms, 99)), 6),
        "throughput_rps": round(float(batch_size * len(ms) / (ms.sum() / 1000.0)), 3),
    }


def measure(session: Any, x: np.ndarray, batch_size: int = 32, iterations: int = 200, warmup: int = 10,
            input_name: str = "input") -> dict[str, Any]:
    batch = batch_of(x, batch_size)
    feed = {input_name: batch}
    for _ in range(warmup):
        session.run(None, feed)
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return {**summarise(seconds, batch_size), "batchSize": batch_size, "iterations": iterations,
            "warmup": warmup, "provider": session.get_providers()[0]}
