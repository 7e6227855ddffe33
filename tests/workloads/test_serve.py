import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from loom.local.s3 import free_port


def _start(model_dir: Path, name: str, env_extra: dict | None = None):
    port = free_port()
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom.workloads.serve", "--model_name", name, "--model_dir", str(model_dir),
         "--http_port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(proc, url, name, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                if httpx.get(f"{url}/v2/models/{name}/ready", timeout=1).status_code == 200:
                    return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def model_dir(trained, storage, tmp_path_factory):
    _, _, result, _ = trained
    d = tmp_path_factory.mktemp("model")
    storage.get_file(result["model"]["uri"], d / "model.onnx")
    return d, result


def test_serve_v1_v2(model_dir):
    d, result = model_dir
    proc, url = _start(d, "iris", {"LOOM_MODEL_DIGEST": result["model"]["digest"]})
    try:
        assert _wait_ready(proc, url, "iris"), proc.stdout.read() if proc.poll() is not None else "not ready"
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        r = httpx.post(f"{url}/v1/models/iris:predict", json={"instances": rows}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["predictions"] == ["setosa", "virginica"]
        assert len(body["probabilities"]) == 2 and abs(sum(body["probabilities"][0]) - 1) < 1e-4

        named = [dict(zip(result["features"], row)) for row in rows]
        r = httpx.post(f"{url}/v1/models/iris:predict", json={"instances": named}, timeout=10)
        assert r.status_code == 200 and r.json()["predictions"] == ["setosa", "virginica"]

        v2 = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                          "data": [v for row in rows for v in row]}]}
        r = httpx.post(f"{url}/v2/models/iris/infer", json=v2, timeout=10)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "probabilities" and out["shape"] == [2, 3] and out["datatype"] == "FP32"
        assert out["data"][0] > 0.5 and out["data"][5] > 0.5

        r = httpx.post(f"{url}/v1/models/iris:predict", json={"instances": [[1.0, 2.0]]}, timeout=10)
        assert r.status_code == 400 and "shape" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_digest_mismatch(model_dir):
    d, _ = model_dir
    proc, url = _start(d, "iris", {"LOOM_MODEL_DIGEST": "sha256:" + "0" * 64})
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "model digest mismatch" in out
