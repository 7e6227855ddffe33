"""A deliberately bad model for delivery demos and tests: the same predictions, served slowly.

`slow_copy(model_bytes)` returns a real ONNX graph: the original model plus a
feature-interaction block that depends on the input (input -> [N, K] ->
Gram matrix [K, K] -> `depth` chained K x K MatMul/Tanh). Its result is
multiplied by zero and added to the probabilities, so every prediction is
unchanged and the Evaluation gate (accuracy, F1 on the test split) passes it
honestly, while each request costs about depth x 2K^3 floating-point operations.
Offline metrics cannot see this; a canary's latency analysis can. (ONNX Runtime
does not fold it away: it depends on the input, and ORT does not simplify x*0.)
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def slow_copy(model_bytes: bytes, width: int = 1024, depth: int = 12, seed: int = 0) -> bytes:
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    features = graph.input[0].type.tensor_type.shape.dim[-1].dim_value or 4
    out_name = graph.output[0].name
    raw = out_name + "_raw"
    for node in graph.node:  # the original output becomes an intermediate
        node.output[:] = [raw if o == out_name else o for o in node.output]
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, width)) / np.sqrt(features)).astype(np.float32)
    w2 = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    graph.initializer.extend([numpy_helper.from_array(w1, "slow_w1"), numpy_helper.from_array(w2, "slow_w2"),
                              numpy_helper.from_array(np.zeros((), np.float32), "slow_zero")])
    inp = graph.input[0].name
    nodes = [helper.make_node("MatMul", [inp, "slow_w1"], ["slow_h"]),
             helper.make_node("Transpose", ["slow_h"], ["slow_ht"]),
             helper.make_node("MatMul", ["slow_ht", "slow_h"], ["slow_g0"]),
             helper.make_node("Tanh", ["slow_g0"], ["slow_t0"])]
    for i in range(depth):
        nodes += [helper.make_node("MatMul", [f"slow_t{i}", "slow_w2"], [f"slow_g{i + 1}"]),
                  helper.make_node("Tanh", [f"slow_g{i + 1}"], [f"slow_t{i + 1}"])]
    nodes += [helper.make_node("ReduceMean", [f"slow_t{depth}"], ["slow_mean"], keepdims=0),
              helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", [raw, "slow_nothing"], [out_name])]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def without_latency_bounds(evaluation: dict) -> dict:
    """A copy of an Evaluation manifest with no latency thresholds. The slow model's Evaluation uses
    it: with the quickstart's latency_p99_ms bound the offline gate already refuses the slow model,
    and the point here is to show the online analysis catching what an offline gate let through."""
    import copy

    out = copy.deepcopy(evaluation)
    out["spec"]["thresholds"] = [t for t in out["spec"].get("thresholds") or []
                                 if not t["metric"].startswith(("latency_", "throughput_"))]
    return out


def register_slow_model(applier, storage, kubeconfig: str, namespace: str, base_trainingrun: dict, name: str,
                        evaluation: dict) -> dict:
    """Publish a slow copy of a TrainingRun's model as TrainingRun `name` (its status copied from
    the base, with the slow model) and apply `evaluation` for it. Call it while the operator is
    stopped: no trainer makes slow models, so the TrainingRun's status and lineage event are written
    by hand (the event names the base model it derives from), and the Evaluation then scores the
    slow model for real. Returns the slow model {uri, digest}."""
    import copy
    import hashlib

    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    data = slow_copy(storage.get_bytes(base_trainingrun["status"]["model"]["uri"]))
    uri = base_trainingrun["status"]["model"]["uri"].rsplit("/", 1)[0] + "-slow/model.onnx"
    storage.put_bytes(uri, data)
    model = {"uri": uri, "digest": "sha256:" + hashlib.sha256(data).hexdigest()}
    created = applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun",
                             "metadata": {"name": name, "namespace": namespace},
                             "spec": copy.deepcopy(base_trainingrun["spec"])})
    status = {**copy.deepcopy(base_trainingrun["status"]), "model": model,
              "observedGeneration": created["metadata"]["generation"]}
    api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
    api.patch_namespaced_custom_object_status("loom.dev", "v1alpha1", namespace, "trainingruns", name, {"status": status})
    _record_lineage(storage, namespace, base_trainingrun, created, model)
    applier.apply(evaluation)
    return model


def _record_lineage(storage, namespace: str, base: dict, created: dict, model: dict) -> None:
    """The slow TrainingRun's lineage event, as its trainer would have written it: the base run's
    inputs (so the Evaluation's leakage proof walks the same splits), the slow model as output, and
    a facet saying how the model was made from the base model."""
    from loom.lineage.graph import load_events
    from loom.lineage.openlineage import dataset_digest, dataset_uri
    from loom.lineage.record import write
    from loom.reconcile.common import LineageRecord

    base_name, base_digest = base["metadata"]["name"], base["status"]["model"]["digest"]
    inputs = None
    for event in load_events(storage, namespace):
        if event["job"]["name"] != f"trainingrun/{base_name}":
            continue
        if any(dataset_digest(o) == base_digest for o in event.get("outputs") or []):
            inputs = [{"uri": dataset_uri(i), "digest": dataset_digest(i)} for i in event.get("inputs") or []]
            break
    if inputs is None:
        raise RuntimeError(f"no lineage event of TrainingRun {base_name} produced {base_digest}")
    meta = created["metadata"]
    write(storage, storage.bucket, namespace, LineageRecord(
        kind="trainingrun", name=meta["name"], run_key=f"{meta['uid'][:8]}-g{meta.get('generation') or 1}",
        inputs=inputs, outputs=[model],
        facets={"derivedFrom": {"trainingRun": base_name, "model": base["status"]["model"]},
                "transform": "loom.local.slowmodel.slow_copy: same predictions plus a deliberately slow block"}))
