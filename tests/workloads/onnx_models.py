"""Small real ONNX classifiers and data for the evaluation tests, built directly with onnx.helper.

A linear model: probabilities = softmax(input @ W + b), with Loom's metadata
(loom.features, loom.classes), the same interface the trainer exports.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

FEATURES = ["x0", "x1", "x2"]
CLASSES = ["a", "b", "c"]


def linear_onnx(weights: np.ndarray, bias: np.ndarray, features=FEATURES, classes=CLASSES, softmax: bool = True,
                output: str = "probabilities") -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.asarray(weights, np.float32), "W")
    b = numpy_helper.from_array(np.asarray(bias, np.float32), "B")
    nodes = [helper.make_node("MatMul", ["input", "W"], ["z0"]),
             helper.make_node("Add", ["z0", "B"], ["logits" if softmax else output])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], [output], axis=-1))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", len(features)])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", len(classes)])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (("loom.features", json.dumps(list(features))), ("loom.classes", json.dumps(list(classes)))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def good_model(scale: float = 3.0) -> bytes:
    return linear_onnx(np.eye(3) * scale, np.zeros(3))


def biased_model(bias: float = 1.5) -> bytes:
    """Worse: leans towards class a."""
    return linear_onnx(np.eye(3) * 3.0, np.array([bias, 0.0, 0.0]))


def test_frame(n: int = 240, seed: int = 7, start_id: int = 1000) -> pd.DataFrame:
    """Rows whose true class c has x_c near 1 and the others near 0; the south region is noisier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    region = np.where(rng.random(n) < 0.5, "north", "south")
    noise = np.where(region == "north", 0.3, 0.75)[:, None] * rng.normal(size=(n, 3))
    x = np.eye(3)[y] + noise
    df = pd.DataFrame(x.round(6), columns=FEATURES)
    df.insert(0, "id", [str(start_id + i) for i in range(n)])
    df["region"] = region
    df["label"] = [CLASSES[i] for i in y]
    return df


def csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode()
