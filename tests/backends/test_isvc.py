"""InferenceService patches of each deployment mode (checked against kserve's own classes), and the
I/O of an analysis round against local HTTP servers: webhooks, Prometheus, the model server's metrics."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from loom.backends import inferenceservice as isvcs
from loom.backends import prometheus, rounds, webhooks
from loom.reconcile import rollout as ro

D, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)


class _Response:
    def __init__(self, obj):
        self.data = json.dumps(obj)


def _kserve_roundtrip(spec):
    import kserve

    client = kserve.ApiClient()
    return client.sanitize_for_serialization(client.deserialize(_Response(spec), "V1beta1InferenceServiceSpec"))


def test_raw_deployment_canary_form_is_kserve_0_20s_spec_canary():
    pytest.importorskip("kserve")
    model = {"uri": "s3://loom/b.onnx", "digest": D2}
    patch = isvcs.canary_patch(model, "loom-s3", 25, "loom-onnx", "RawDeployment")
    stable = isvcs.predictor("s3://loom/a.onnx", D, "loom-s3", None, "loom-onnx", isvcs.predictor_name(D))
    del stable["canaryTrafficPercent"]
    spec = {"predictor": stable, **patch["spec"]}
    # kserve's ApiClient resolves only its own classes (env is a kubernetes V1EnvVar): compare without env.
    bare = json.loads(json.dumps(spec))
    bare["predictor"]["model"].pop("env", None)
    bare["canary"][0]["predictor"]["model"].pop("env", None)
    back = _kserve_roundtrip(bare)
    for pred in (back["predictor"], back["canary"][0]["predictor"]):
        assert pred["model"].pop("name") == ""  # kserve's default container name
    assert back == bare  # nothing lost: every field is one kserve knows
    assert back["canary"][0]["trafficPercent"] == 25 and back["canary"][0]["predictor"]["name"] == "m-bbbbbbbbbbbb"
    assert back["canary"][0]["predictor"]["model"]["storageUri"] == "s3://loom/b.onnx"
    assert isvcs.isvc_models({"spec": spec}, "RawDeployment") == {"stable": D, "canary": D2, "weight": 25}
    assert isvcs.rollback_patch("RawDeployment") == {"spec": {"canary": None}}
    promoted = isvcs.promote_patch(model, "loom-s3", "loom-onnx", "RawDeployment")["spec"]
    assert promoted["canary"] is None and promoted["predictor"]["name"] == "m-bbbbbbbbbbbb"


def test_serverless_canary_form_and_mode_from_the_annotation():
    model = {"uri": "s3://loom/b.onnx", "digest": D2}
    patch = isvcs.canary_patch(model, "loom-s3", 10, "loom-onnx", "Serverless")
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvcs.isvc_models(patch, "Serverless") == {"stable": None, "canary": D2, "weight": 10}
    assert isvcs.rollback_patch("Serverless") == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert isvcs.promote_patch(model, "sa", "loom-onnx", "Serverless") == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    annotated = {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": "Standard"}}}
    assert isvcs.deployment_mode(None, annotated) == "RawDeployment"
    assert isvcs.deployment_mode(None, {}) == "Serverless" and isvcs.deployment_mode("RawDeployment", {}) == "RawDeployment"
    triton = isvcs.predictor("s3://m", D, "sa", None, "triton")
    assert triton["model"]["runtime"] == "kserve-tritonserver"


class _Server:
    """A loopback HTTP server answering from a function (method, path, query, body) -> (status, json)."""

    def __init__(self, answer):
        outer = self
        self.requests: list[tuple[str, str, dict]] = []

        class Handler(BaseHTTPRequestHandler):
            def _do(self, method):
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payload = json.loads(body) if body else {}
                outer.requests.append((method, url.path, payload))
                status, obj = answer(method, url.path, parse_qs(url.query), payload)
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._do("GET")

            def do_POST(self):
                self._do("POST")

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made = []

    def make(answer):
        s = _Server(answer)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


BODY = {"metadata": {"name": "iris", "namespace": "team-a"}}


def test_webhook_posts_flaggers_payload_and_reads_the_status(server):
    s = server(lambda m, path, q, body: (200 if path == "/ok" else 503, {}))
    hook = {"name": "gate", "type": "confirm-promotion", "url": f"{s.url}/ok", "metadata": {"ticket": "OPS-1"}}
    res = webhooks.call(hook, webhooks.payload(BODY, hook, "Waiting", D2))
    assert res == {"type": "confirm-promotion", "ok": True, "message": "HTTP 200"}
    assert s.requests[0] == ("POST", "/ok", {"name": "iris", "namespace": "team-a", "phase": "Waiting", "checksum": D2,
                                             "type": "confirm-promotion", "metadata": {"ticket": "OPS-1"}})
    assert webhooks.call({**hook, "url": f"{s.url}/no"}, {})["ok"] is False
    gone = webhooks.call({**hook, "url": "http://127.0.0.1:9/x", "timeoutSeconds": 1}, {})
    assert gone["ok"] is False and gone["message"].startswith("unreachable")


def test_prometheus_query_answers_a_number_or_why_not(server):
    answers = {
        "vec": {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2.5"]}]}},
        "sca": {"status": "success", "data": {"resultType": "scalar", "result": [1, "7"]}},
        "empty": {"status": "success", "data": {"resultType": "vector", "result": []}},
        "nan": {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}},
        "bad": {"status": "error", "error": "parse error"},
    }
    s = server(lambda m, path, q, body: (400 if q["query"][0] == "bad" else 200, answers[q["query"][0]]))
    assert prometheus.query(s.url, "vec") == (2.5, None)
    assert prometheus.query(s.url, "sca") == (7.0, None)
    assert prometheus.query(s.url, "empty") == (None, "no data")
    assert prometheus.query(s.url, "nan")[0] is None
    assert prometheus.query(s.url, "bad") == (None, "prometheus answered HTTP 400")
    assert prometheus.render('x{ns="{{namespace}}",r="{{ revision }}"}[{{interval}}]',
                             {"namespace": "a", "revision": "r1", "interval": "30s"}) == 'x{ns="a",r="r1"}[30s]'


def _deployment(metrics, webhooks_=()):
    rollout = ro.start({"uri": "s3://b", "digest": D2}, [10, 50], NOW - dt.timedelta(seconds=30))
    rollout.update({"preRolloutPassed": True, "weight": 10})
    return {"metadata": {"name": "iris", "namespace": "team-a", "generation": 1},
            "spec": {"evaluationRef": {"name": "ev"}, "canary": {"steps": [10, 50]},
                     "analysis": {"interval": 5, "minRequests": 3, "metrics": metrics, "webhooks": list(webhooks_)}},
            "status": {"model": {"uri": "s3://a", "digest": D}, "canaryModel": {"uri": "s3://b", "digest": D2},
                       "rollout": rollout}}


def _isvc(url):
    return {"metadata": {"name": "iris", "namespace": "team-a", "generation": 2},
            "spec": {"predictor": {"canaryTrafficPercent": 10,
                                   "model": {"env": [{"name": "LOOM_MODEL_DIGEST", "value": D2}]}}},
            "status": {"observedGeneration": 2, "url": url,
                       "conditions": [{"type": "Ready", "status": "True"}, {"type": "LatestDeploymentReady", "status": "True"}],
                       "components": {"predictor": {"latestCreatedRevision": "iris-predictor-00002",
                                                    "latestReadyRevision": "iris-predictor-00002"}}}}


def test_a_round_reads_the_canary_revisions_own_metrics(server):
    stats = {"iris-predictor-00002": {"requests": 10, "errors": 1, "latencyMs": {"p50": 3.0, "p95": 8.0, "p99": 240.0}},
             "iris-predictor-00001": {"requests": 90, "errors": 0, "latencyMs": {"p50": 2.0, "p95": 3.0, "p99": 4.0}}}
    s = server(lambda m, path, q, body: (200, {"revisions": stats}) if path == "/loom/metrics" else (404, {}))
    hook = {"name": "stop", "type": "rollback", "url": f"{s.url}/nope"}
    body = _deployment([{"name": "error-rate", "thresholdRange": {"max": 5}},
                        {"name": "latency-p99", "thresholdRange": {"max": 100}}], [hook])
    rnd = rounds.run_round(body, _isvc(s.url), NOW)
    assert [(c["metric"], c["result"], c.get("value")) for c in rnd.checks] == [
        ("error-rate", "fail", 10.0), ("latency-p99", "fail", 240.0)]
    assert rnd.webhooks["stop"]["ok"] is False
    # Not due yet: nothing is measured or called.
    body["status"]["rollout"]["lastAnalysisAt"] = "2026-11-22T11:59:58Z"
    n = len(s.requests)
    assert rounds.run_round(body, _isvc(s.url), NOW) is None and len(s.requests) == n


def test_a_round_without_metrics_source_is_inconclusive_and_prometheus_metrics_are_rendered(server):
    s = server(lambda m, path, q, body: (200, {"status": "success", "data": {"resultType": "vector",
                                                                          "result": [{"value": [1, q["query"][0].count("iris-predictor-00002")]}]}}))
    body = _deployment([{"name": "error-rate", "thresholdRange": {"max": 5}},
                        {"name": "revision-mentions", "thresholdRange": {"min": 1},
                         "prometheus": {"address": s.url, "query": 'x{r="{{revision}}",ns="{{namespace}}"}'}}])
    rnd = rounds.run_round(body, _isvc("http://127.0.0.1:9"), NOW, prometheus_address=None)
    assert rnd.checks[0]["result"] == "inconclusive" and "LOOM_PROMETHEUS_ADDRESS" in rnd.checks[0]["message"]
    assert rnd.checks[1]["result"] == "pass" and rnd.checks[1]["value"] == 1.0
