"""The InferenceService predictor: KServe's Python model server on ONNX Runtime.

    python -m loom.workloads.serve --model_name NAME --model_dir DIR [--http_port P]

v1: POST /v1/models/NAME:predict  {"instances": [[f1, f2, ...], ...]}  (or rows
as objects keyed by feature name) -> {"predictions": ["label", ...],
"probabilities": [[p1, p2, ...], ...]}.
v2: POST /v2/models/NAME/infer with input ``input`` (FP32 [N, F]) -> output
``probabilities`` (FP32 [N, C]).

If env LOOM_MODEL_DIGEST is set, the model file's sha256 must match it or
``load()`` raises and the server never becomes Ready. gRPC is off unless
``--enable_grpc true`` is given. This is the only Loom module importing kserve.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import kserve
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ..lineage.digest import sha256_file

log = logging.getLogger("loom.workloads.serve")


class ModelLoadError(RuntimeError):
    pass


def find_model_file(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if model_dir.is_file():
        return model_dir
    preferred = model_dir / "model.onnx"
    if preferred.is_file():
        return preferred
    found = sorted(model_dir.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"no .onnx model in {model_dir}")
    raise ModelLoadError(f"{len(found)} .onnx files in {model_dir} and none is named model.onnx")


class OnnxModel(kserve.Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.session = None
        self.features: list[str] = []
        self.classes: list[str] = []
        self.digest: str | None = None

    def load(self) -> bool:
        import onnxruntime as ort

        path = find_model_file(self.model_dir)
        digest = sha256_file(path)
        expected = os.environ.get("LOOM_MODEL_DIGEST")
        if expected and digest != expected:
            raise ModelLoadError(f"model digest mismatch: {path} has {digest}, expected {expected}")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        self.features = json.loads(meta.get("loom.features", "[]"))
        self.classes = json.loads(meta.get("loom.classes", "[]"))
        if not self.classes:
            n = session.get_outputs()[0].shape[-1]
            self.classes = [str(i) for i in range(n)] if isinstance(n, int) else []
        self.session = session
        self.digest = digest
        self.ready = True
        log.info("loaded %s (%s): features %s classes %s", path, digest, self.features, self.classes)
        return self.ready

    # -- inference -------------------------------------------------------
    def _n_features(self) -> int | None:
        if self.features:
            return len(self.features)
        dim = self.session.get_inputs()[0].shape[-1]
        return dim if isinstance(dim, int) else None

    def _matrix(self, rows: Any) -> np.ndarray:
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("expected a non-empty list of instances")
        if all(isinstance(r, dict) for r in rows):
            missing = sorted({f for r in rows for f in self.features if f not in r})
            if missing:
                raise InvalidInput(f"instances lack feature(s) {', '.join(missing)}")
            rows = [[r[f] for f in self.features] for r in rows]
        try:
            x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"instances must be numbers: {exc}") from exc
        n = self._n_features()
        if x.ndim != 2 or (n is not None and x.shape[1] != n):
            raise InvalidInput(f"expected instances of shape [N, {n}], got {list(x.shape)}")
        return x

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"input": x})[0]

    def predict(self, payload: dict | InferRequest, headers: dict | None = None,
                response_headers: dict | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            tensor = payload.get_input_by_name("input") or (payload.inputs[0] if len(payload.inputs) == 1 else None)
            if tensor is None:
                raise InvalidInput("v2 request needs an input named 'input'")
            x = tensor.as_numpy().astype(np.float32)
            if x.ndim == 1:
                x = x.reshape(1, -1)
            x = self._matrix(x.tolist())
            probs = self._probabilities(x).astype(np.float32)
            out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
            out.set_data_from_numpy(probs, binary_data=False)
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=[out])
        if not isinstance(payload, dict) or "instances" not in payload:
            raise InvalidInput('v1 request must be {"instances": [[...], ...]}')
        x = self._matrix(payload["instances"])
        probs = self._probabilities(x)
        labels = [self.classes[i] if i < len(self.classes) else str(i) for i in probs.argmax(axis=1)]
        return {"predictions": labels, "probabilities": probs.round(6).tolist()}


def build_parser() -> argparse.ArgumentParser:
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(parents=[kserve_parser], description="Loom ONNX model server")
    parser.add_argument("--model_dir", required=True, help="directory holding model.onnx (or one .onnx file)")
    parser.set_defaults(model_name="model", enable_grpc=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    args, _ = build_parser().parse_known_args(argv)
    model = OnnxModel(args.model_name, args.model_dir)
    model.load()
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=args.workers,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
    )
    server.start([model])


if __name__ == "__main__":
    try:
        main()
    except ModelLoadError as exc:
        logging.basicConfig()
        log.error("refusing to serve: %s", exc)
        raise SystemExit(1)
