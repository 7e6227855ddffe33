"""`make demo`: the whole chain on the embedded cluster, start to finish.

Starts the embedded cluster (API server, S3, executor) and the real operator,
applies examples/quickstart in order, shows progress, asks the served model for
predictions, and prints the lineage chain from the Deployment back to the data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubernetes import config as k8s_config

from loom.manifests import Applier, load

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
NAMESPACE = "quickstart"
FINAL = {"Ready", "Succeeded", "Passed", "Available", "Failed", "RolledBack"}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def install_crds(applier: Applier) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        applier.apply_all(load(path))


def upload_example_data(s3_env: dict[str, str]) -> None:
    from loom.backends.storage import Storage

    storage = Storage.from_env(s3_env)
    storage.ensure_bucket("loom-examples")
    for name in ("iris.csv", "annotations.csv", "gold.csv", "guidelines.md"):
        storage.put_file(f"s3://loom-examples/quickstart/{name}", QUICKSTART / "data" / name)


def template_vars(s3_env: dict[str, str]) -> dict[str, str]:
    url = urlparse(s3_env["LOOM_S3_ENDPOINT"])
    return {
        "S3_ENDPOINT_HOSTPORT": url.netloc,
        "S3_USE_HTTPS": "1" if url.scheme == "https" else "0",
        "AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
    }


def summary(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return ready.get("message") or ready.get("reason") or ""


def watch_chain(applier: Applier, chain: list[tuple[str, str]], timeout: float, operator=None) -> dict[str, dict[str, Any]]:
    """Print each resource's phase as it changes; return them once the chain has settled."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    objs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for kind, name in chain:
            obj = applier.get("loom.dev/v1alpha1", kind, name, NAMESPACE) or {}
            objs[kind] = obj
            phase = (obj.get("status") or {}).get("phase") or "Pending"
            line = f"{phase}: {summary(obj)}"
            if seen.get(kind) != line:
                seen[kind] = line
                say(f"{kind:<12} {name:<14} {line}")
        phases = [(o.get("status") or {}).get("phase") for o in objs.values()]
        if "Failed" in phases or objs["Deployment"].get("status", {}).get("phase") in FINAL:
            return objs
        if operator is not None and not operator.alive():
            raise RuntimeError("the operator exited:\n" + operator.log_tail())
        time.sleep(0.5)
    raise TimeoutError(f"the chain did not settle within {timeout:.0f}s")


def predict(url: str, model: str, rows: list[list[float]]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{model}:predict",
        data=json.dumps({"instances": rows}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _model_and_eval(suffix: str, hidden: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    tr = load(QUICKSTART / "03-trainingrun.yaml")[0]
    tr["metadata"]["name"] = f"iris-mlp-{suffix}"
    tr["spec"]["model"]["hiddenUnits"] = hidden
    tr["spec"]["hyperparameters"]["seed"] = seed
    ev = load(QUICKSTART / "04-evaluation.yaml")[0]
    ev["metadata"]["name"] = f"iris-mlp-{suffix}-eval"
    ev["spec"]["trainingRunRef"]["name"] = tr["metadata"]["name"]
    return tr, ev


def _wait(applier: Applier, kind: str, name: str, until, timeout: float, show=None) -> dict[str, Any]:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        obj = applier.get("loom.dev/v1alpha1", kind, name, NAMESPACE) or {}
        line = show(obj) if show else None
        if line and line != last:
            say(line)
            last = line
        if until(obj):
            return obj
        time.sleep(0.5)
    raise TimeoutError(f"{kind}/{name} did not settle within {timeout:.0f}s")


def _rollout_line(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    r = status.get("rollout") or {}
    return f"Deployment   iris           {status.get('phase')}: {r.get('message') or summary(obj)}"


def progressive_delivery(applier: Applier, cluster: Any, operator: Any, url: str, timeout: float) -> None:
    """A good model promoted step by step, then a deliberately slow one rolled back by its analysis."""
    import threading

    from loom.backends.storage import Storage
    from loom.local.slowmodel import register_slow_model, without_latency_bounds

    def passed(name: str) -> dict[str, Any]:
        ev = _wait(applier, "Evaluation", name, lambda o: (o.get("status") or {}).get("phase") in ("Passed", "Failed"), timeout)
        if ev["status"]["phase"] != "Passed":
            raise RuntimeError(f"Evaluation {name}: {summary(ev)}")
        say(f"Evaluation   {name:<14} Passed: {summary(ev)}")
        return ev["status"]["model"]

    stop, revisions = threading.Event(), {}

    def client() -> None:  # live traffic: the analysis judges what the canary serves
        while not stop.is_set():
            req = urllib.request.Request(f"{url}/v1/models/iris:predict", data=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    rev = resp.headers.get("X-Loom-Revision")
                    revisions[rev] = revisions.get(rev, 0) + 1
            except OSError:
                pass
            time.sleep(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        say("progressive delivery: a second model, with live traffic on the Deployment")
        tr, ev = _model_and_eval("v2", 24, 1)
        applier.apply_all([tr, ev])
        v2 = passed(ev["metadata"]["name"])
        applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "iris", "namespace": NAMESPACE},
                       "spec": {"evaluationRef": {"name": ev["metadata"]["name"]}}})
        dep = _wait(applier, "Deployment", "iris", lambda o: (o.get("status") or {}).get("model", {}).get("digest") == v2["digest"]
                    or (o.get("status") or {}).get("phase") == "RolledBack", timeout, _rollout_line)
        say(f"steps passed: {dep['status']['rollout'].get('stepsPassed')}; champion now {dep['status']['model']['digest'][:19]}")
        say("a deliberately slow model: the same predictions (so its Evaluation passes), 0.2 to 0.4 s of extra work per request")
        say("(registered by hand while the operator is stopped: no trainer makes slow models; its Evaluation")
        say(" bounds no latency here, since the quickstart's latency_p99_ms bound would refuse it offline)")
        operator.stop()
        slow_ev = without_latency_bounds(load(QUICKSTART / "04-evaluation.yaml")[0])
        slow_ev["metadata"]["name"] = "iris-mlp-slow-eval"
        slow_ev["spec"]["trainingRunRef"]["name"] = "iris-mlp-slow"
        base = applier.get("loom.dev/v1alpha1", "TrainingRun", tr["metadata"]["name"], NAMESPACE)
        register_slow_model(applier, Storage.from_env(cluster.s3_env), cluster.kubeconfig, NAMESPACE, base, "iris-mlp-slow", slow_ev)
        operator.start()
        passed("iris-mlp-slow-eval")
        applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "iris", "namespace": NAMESPACE},
                       "spec": {"evaluationRef": {"name": "iris-mlp-slow-eval"}}})
        dep = _wait(applier, "Deployment", "iris", lambda o: (o.get("status") or {}).get("phase") == "RolledBack", timeout, _rollout_line)
        r = dep["status"]["rollout"]
        say(f"rolled back after {r['analysisRounds']} analysis round(s) ({r['failedChecks']} failed); champion still "
            f"{dep['status']['model']['digest'][:19]}")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    say(f"requests answered per revision during the demo: {json.dumps(revisions, sort_keys=True)}")


def run(workdir: Path, timeout: float, delivery: bool = False) -> int:
    from loom.lineage.record import format_lineage
    from loom.local.cluster import EmbeddedCluster
    from loom.local.operatorproc import OperatorProcess

    started = time.monotonic()
    say("starting the embedded cluster: Kubernetes API, S3, executor")
    with EmbeddedCluster(workdir) as cluster:
        say(f"API server {cluster.api_url}; kubeconfig {cluster.kubeconfig}")
        api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
        applier = Applier(api)
        install_crds(applier)
        upload_example_data(cluster.s3_env)
        operator = OperatorProcess(cluster.kubeconfig, cluster.s3_env, workdir / "operator.log").start()
        say(f"operator started (log: {workdir / 'operator.log'})")
        try:
            chain = []  # the Loom resources, in the order applied
            for path in sorted(QUICKSTART.glob("0*.yaml")):
                applied = applier.apply_all(load(path, template_vars(cluster.s3_env)))
                say(f"applied {path.relative_to(ROOT)}: " + ", ".join(f"{m['kind']}/{m['metadata']['name']}" for m in applied))
                chain += [(m["kind"], m["metadata"]["name"]) for m in applied if m["apiVersion"].startswith("loom.dev/")]
            objs = watch_chain(applier, chain, timeout, operator)
            dep = objs["Deployment"]
            if dep.get("status", {}).get("phase") != "Available":
                failed = [f"{k}: {summary(o)}" for k, o in objs.items() if (o.get("status") or {}).get("phase") == "Failed"]
                say("the chain failed: " + "; ".join(failed))
                print(operator.log_tail(), file=sys.stderr)
                return 1
            rows = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
            url = dep["status"]["url"]
            model = dep["metadata"]["name"]  # KServe names the model after the InferenceService
            say(f"POST {url}/v1/models/{model}:predict {json.dumps({'instances': rows})}")
            answer = predict(url, model, rows)
            say(f"the model answers: {json.dumps(answer)}")
            say("lineage, from the served model back to its sources:")
            from loom.backends.storage import Storage

            print(format_lineage(Storage.from_env(cluster.s3_env), cluster.s3_env.get("LOOM_S3_BUCKET", "loom"),
                                 NAMESPACE, f"deployment/{model}"), flush=True)
            if delivery:
                progressive_delivery(applier, cluster, operator, url, timeout)
        finally:
            operator.stop()
    say(f"demo finished in {time.monotonic() - started:.0f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".loom/demo", help="working directory for the embedded cluster")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the chain")
    parser.add_argument("--delivery", action="store_true",
                        help="then roll out a second model step by step, and roll back a deliberately slow one (about 1.5 min more)")
    args = parser.parse_args(argv)
    return run(Path(args.dir).resolve(), args.timeout, args.delivery)


if __name__ == "__main__":
    sys.exit(main())
