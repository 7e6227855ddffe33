"""Progressive delivery through the real operator on the embedded cluster.

A good model is promoted step by step (with the operator SIGKILLed mid-rollout,
and webhooks gating it); a deliberately slow model (loom.local.slowmodel: the same
predictions, so its Evaluation passes honestly, but 0.2 to 0.4 s of extra work
per request) is rolled back automatically by its latency analysis, and serves nothing
after; a third rollout is promoted by hand (loom.dev/promote).
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from it_helpers import condition, phase

pytestmark = pytest.mark.integration
NS = "delivery"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
FAILURE_LIMIT = 2


def deployment(evaluation, webhooks=(), annotations=None, steps=(20, 50)):
    meta = {"name": "iris", "namespace": NS}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment", "metadata": meta,
            "spec": {"evaluationRef": {"name": evaluation},
                     "canary": {"steps": list(steps), "progressDeadlineSeconds": 120},
                     "analysis": {"interval": 2, "failureLimit": FAILURE_LIMIT, "minRequests": 3,
                                  "metrics": [{"name": "error-rate", "thresholdRange": {"max": 5}},
                                              {"name": "latency-p50", "thresholdRange": {"max": 100}}],
                                  "webhooks": list(webhooks)}}}


class Traffic:
    """Clients sending predictions to the Deployment's URL until stopped; each answer's revision is kept."""

    def __init__(self, url, threads=3):
        self.url, self.stop_flag, self.answers = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop_flag.is_set():
            self.answers.append(predict(self.url))
            time.sleep(0.05)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


def predict(url):
    req = urllib.request.Request(f"{url}/v1/models/iris:predict", data=json.dumps({"instances": ROWS}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("X-Loom-Revision")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Loom-Revision")


class Hooks:
    """A webhook receiver: answers 200 for the names in `allow`, 503 otherwise; keeps every payload."""

    def __init__(self):
        outer = self
        self.allow, self.payloads = set(), []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                name = self.path.strip("/")
                outer.payloads.append((name, body))
                self.send_response(200 if name in outer.allow else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hook(self, name, type_):
        return {"name": name, "type": type_, "url": f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}",
                "metadata": {"suite": "delivery"}}


def second_model(env, suffix, hidden, seed):
    tr = env.quickstart("03-trainingrun.yaml", NS)[0]
    tr["metadata"]["name"] = f"iris-mlp-{suffix}"
    tr["spec"]["model"]["hiddenUnits"] = hidden
    tr["spec"]["hyperparameters"]["seed"] = seed
    ev = env.quickstart("04-evaluation.yaml", NS)[0]
    ev["metadata"]["name"] = f"iris-mlp-{suffix}-eval"
    ev["spec"]["trainingRunRef"]["name"] = tr["metadata"]["name"]
    env.applier.apply_all([tr, ev])
    done = env.wait_phase("Evaluation", ev["metadata"]["name"], {"Passed", "Failed"}, timeout=300, ns=NS)
    assert phase(done) == "Passed", done["status"]
    return done["status"]["model"]


def rollout(obj):
    return (obj.get("status") or {}).get("rollout") or {}


def proxy_counts(url, since=None):
    query = f"?since={since}" if since else ""
    with urllib.request.urlopen(f"{url}/loom/metrics{query}", timeout=10) as resp:
        return {rev: s["requests"] for rev, s in json.loads(resp.read())["revisions"].items()}


@pytest.fixture(scope="module")
def served(env):
    for name in ("00-namespace.yaml", "01-dataset.yaml", "02-labeljob.yaml", "03-trainingrun.yaml", "04-evaluation.yaml"):
        env.applier.apply_all(env.quickstart(name, NS))
    env.applier.apply(deployment("iris-mlp-eval"))
    dep = env.wait_phase("Deployment", "iris", {"Available", "Failed"}, timeout=400, ns=NS)
    assert phase(dep) == "Available", dep["status"]
    traffic = Traffic(dep["status"]["url"])
    yield dep
    traffic.stop()


def test_good_model_is_promoted_step_by_step_across_an_operator_restart(env, served):
    champion = served["status"]["model"]
    hooks = Hooks()
    hooks.allow = {"smoke"}  # pre-rollout passes; confirm-promotion refuses until the test allows it
    v2 = second_model(env, "v2", hidden=24, seed=1)
    env.applier.apply(deployment("iris-mlp-v2-eval", [hooks.hook("smoke", "pre-rollout"), hooks.hook("approve", "confirm-promotion")]))
    env.wait("Deployment", "iris", lambda o: rollout(o).get("weight") == 20 and rollout(o).get("model", {}).get("digest") == v2["digest"],
             timeout=120, ns=NS)
    env.operator.kill()  # SIGKILL mid-rollout: whatever it was doing is cut off
    env.start_operator()
    dep = env.wait("Deployment", "iris", lambda o: rollout(o).get("awaitingPromotion")
                   and "refused" in condition(o, "Progressing").get("message", ""), timeout=120, ns=NS)
    assert "approve" in [n for n, _ in hooks.payloads]  # the gate was asked, and said no
    assert dep["status"]["model"]["digest"] == champion["digest"]  # not promoted while the gate refuses
    assert condition(dep, "Progressing")["reason"] == "WaitingForConfirmation"
    hooks.allow.add("approve")
    dep = env.wait("Deployment", "iris", lambda o: o["status"]["model"]["digest"] == v2["digest"], timeout=120, ns=NS)
    assert phase(dep) == "Available" and dep["status"]["previousModel"]["digest"] == champion["digest"]
    r = rollout(dep)
    assert r["stepsPassed"] == [20, 50] and r["result"] == "Promoted" and r["failedChecks"] == 0
    names = [n for n, _ in hooks.payloads]
    assert "smoke" in names and names.count("approve") >= 2
    smoke = next(p for n, p in hooks.payloads if n == "smoke")
    assert smoke == {"name": "iris", "namespace": NS, "phase": "Initializing", "checksum": v2["digest"],
                     "type": "pre-rollout", "metadata": {"suite": "delivery"}}
    isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", NS)
    assert isvc["spec"]["predictor"].get("canaryTrafficPercent") is None
    hooks.httpd.shutdown()


def _forge_slow_trainingrun(env, base: dict) -> dict:
    """The slow model's TrainingRun: v2's status and lineage with the slow model (the operator is down while
    they are written, so no PyTorchJob races them; the Evaluation then scores the slow model for real)."""
    from loom.local.slowmodel import register_slow_model, without_latency_bounds

    ev = without_latency_bounds(env.quickstart("04-evaluation.yaml", NS)[0])
    ev["metadata"]["name"] = "iris-mlp-slow-eval"
    ev["spec"]["trainingRunRef"]["name"] = "iris-mlp-slow"
    env.operator.kill()
    try:
        model = register_slow_model(env.applier, env.storage, env.cluster.kubeconfig, NS, base, "iris-mlp-slow", ev)
    finally:
        env.start_operator()
    done = env.wait_phase("Evaluation", "iris-mlp-slow-eval", {"Passed", "Failed"}, timeout=300, ns=NS)
    assert phase(done) == "Passed", done["status"]  # offline metrics cannot tell it is slow
    assert done["status"]["model"]["digest"] == model["digest"]
    return model


def test_slow_model_is_rolled_back_by_analysis_and_serves_nothing_after(env, served):
    champion = env.get("Deployment", "iris", NS)["status"]["model"]
    slow = _forge_slow_trainingrun(env, env.get("TrainingRun", "iris-mlp-v2", NS))
    env.applier.apply(deployment("iris-mlp-slow-eval"))
    dep = env.wait("Deployment", "iris", lambda o: phase(o) == "RolledBack" or o["status"]["model"]["digest"] == slow["digest"],
                   timeout=300, ns=NS)
    assert phase(dep) == "RolledBack", dep["status"]
    rb = condition(dep, "RolledBack")
    assert rb["status"] == "True" and rb["reason"] == "AnalysisFailed", rb
    assert "latency-p50" in rb["message"] and "outside <= 100" in rb["message"] and slow["digest"][:19] in rb["message"]
    r = rollout(dep)
    # Rolled back within interval x failureLimit: exactly failureLimit failed rounds, none passed.
    assert r["failedChecks"] == FAILURE_LIMIT and r["analysisRounds"] - r["inconclusiveRounds"] == FAILURE_LIMIT
    assert r["stepsPassed"] == [] and r["result"] == "RolledBack"
    failed = next(c for c in r["checks"] if c["metric"] == "latency-p50")
    assert failed["result"] == "fail" and failed["value"] > 100
    assert dep["status"]["model"] == champion and slow["digest"] in [m["digest"] for m in dep["status"]["rejectedModels"]]
    isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", NS)
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
    slow_revision = isvc["status"]["components"]["predictor"]["latestCreatedRevision"]
    # The event and the lineage record of the rollback.
    api = k8s_config.new_client_from_config(config_file=str(env.cluster.kubeconfig))
    events = k8s.CoreV1Api(api).list_namespaced_event(NS).items
    assert any(e.reason == "RolledBack" and slow["digest"][:19] in (e.message or "") for e in events)
    records = [env.storage.get_json(o.uri) for o in env.storage.list(f"s3://loom/{NS}/lineage/deployment/iris/")]
    rollback = [r["run"]["facets"]["loom"] for r in records if r["run"]["facets"].get("loom", {}).get("action") == "rollback"]
    assert len(rollback) == 1 and rollback[0]["metric"] == "latency-p50" and rollback[0]["bound"] == "<= 100"
    assert rollback[0]["rejectedModel"]["digest"] == slow["digest"] and rollback[0]["value"] > 100
    # No request is served by the slow model once the rollback has reached the InferenceService's traffic.
    deadline = time.monotonic() + 60
    while True:
        isvc = env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "iris", NS)
        st = isvc.get("status") or {}
        traffic = ((st.get("components") or {}).get("predictor") or {}).get("traffic") or []
        if st.get("observedGeneration") == isvc["metadata"]["generation"] and not any(
                t["revisionName"] == slow_revision and t["percent"] > 0 for t in traffic):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    switched = time.time()  # the executor moves its routes before it writes that status
    url = dep["status"]["url"]
    assert proxy_counts(url).get(slow_revision, 0) > 0  # it did serve during its analysis
    answers = [predict(url) for _ in range(30)]
    assert all(status == 200 and rev != slow_revision for status, rev in answers), answers
    # ... and neither did any of the background clients' requests routed since then.
    routed = proxy_counts(url, since=switched)
    assert routed.get(slow_revision, 0) == 0 and sum(routed.values()) >= 30, routed


def test_manual_promote_by_annotation_is_acted_on_once(env, served):
    hooks = Hooks()  # confirm-promotion refuses: only the annotation can promote
    v3 = second_model(env, "v3", hidden=8, seed=2)
    env.applier.apply(deployment("iris-mlp-v3-eval", [hooks.hook("approve", "confirm-promotion")], steps=(10, 20, 30, 40)))
    env.wait("Deployment", "iris", lambda o: rollout(o).get("weight") == 10 and rollout(o).get("model", {}).get("digest") == v3["digest"],
             timeout=120, ns=NS)
    env.applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment",
                       "metadata": {"name": "iris", "namespace": NS, "annotations": {"loom.dev/promote": "ticket-42"}}})
    dep = env.wait("Deployment", "iris", lambda o: o["status"]["model"]["digest"] == v3["digest"], timeout=60, ns=NS)
    assert phase(dep) == "Available" and dep["status"]["promoteHandled"] == "ticket-42"
    assert rollout(dep)["result"] == "Promoted" and "loom.dev/promote" in condition(dep, "Progressing")["message"]
    # the operator never wrote our metadata: the annotation is still there, handled once
    assert dep["metadata"]["annotations"]["loom.dev/promote"] == "ticket-42"
    hooks.httpd.shutdown()
