"""Reconcile throughput: N TrainingRuns created at once against the embedded cluster with
the real operator running, timed until every PyTorchJob exists; against a bare client loop
creating the same N PyTorchJobs on the same API server. Also the operator's peak RSS.

    python benchmarks/reconcile_throughput.py            # N=200 (under 2 minutes here)
    python benchmarks/reconcile_throughput.py --n 1000

The embedded executor is stopped after start: nothing runs the jobs (1,000 local training
gangs would measure this machine, not the operator). The LabelJob the runs train on is
made Ready by writing its status directly. Ratio = bare time / Loom time (1.0: the operator
creates jobs as fast as a client loop can; the goal is >= 0.5).

Also reported: the time from the last TrainingRun created to the last PyTorchJob
(loomAfterLastCreateSeconds), the CPU the operator and this process (API server, S3, the
client loop) used in the timed phase, the operator's CPU once the N runs wait on their
jobs (operatorSteadyCpuCores), its RSS, and its API requests per run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402

from loom import demo  # noqa: E402
from loom.backends.pytorchjob import Topology, pytorch_job  # noqa: E402
from loom.config import Settings  # noqa: E402
from loom.local.cluster import EmbeddedCluster  # noqa: E402
from loom.local.operatorproc import OperatorProcess  # noqa: E402
from loom.manifests import Applier  # noqa: E402

D = "sha256:" + "a" * 64


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_jobs(api: k8s.CustomObjectsApi, ns: str) -> int:
    return len(api.list_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs")["items"])


def stored_jobs(cluster: EmbeddedCluster, ns: str) -> int:
    """PyTorchJobs stored in ``ns``, read from the embedded server's store in this process.

    The timed wait polls this rather than listing through the API: a list of up to N large
    PyTorchJobs every 0.25 s would load the very server whose throughput is measured (the
    count is confirmed through the API once the wait is over)."""
    objects = cluster.apiserver._server.handler.store.objects.get(("kubeflow.org", "pytorchjobs"), {})
    return sum(1 for (namespace, _) in list(objects) if namespace == ns)  # list(): one atomic copy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--interval", type=float, default=2.0, help="the operator's reconcile interval (its default: 2 s)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reconcile_throughput.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp, EmbeddedCluster(Path(tmp)) as cluster:
        cluster.executor.stop()  # see the docstring: nothing runs the jobs
        api_client = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
        api = k8s.CustomObjectsApi(api_client)
        applier = Applier(api_client)
        demo.install_crds(applier)
        for ns in ("bare", "loom"):
            applier.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

        # Baseline: a bare client loop creating the same PyTorchJobs.
        settings = Settings(s3_endpoint=cluster.s3_env["LOOM_S3_ENDPOINT"])
        task = {"outputPrefix": "s3://loom/bare/x/", "resultUri": "s3://loom/bare/r.json"}
        owner = {"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun", "name": "o", "uid": "u"}
        manifests = [pytorch_job(name=f"tr-{i:05d}-g1", namespace="bare", task=task, owner=owner, labels={},
                                 settings=settings, topology=Topology(workers=1)) for i in range(args.n)]
        for m in manifests:
            m["metadata"].pop("ownerReferences")  # no owner exists in this namespace
        t0 = time.perf_counter()
        for m in manifests:
            api.create_namespaced_custom_object("kubeflow.org", "v1", "bare", "pytorchjobs", m)
        bare_s = time.perf_counter() - t0
        assert count_jobs(api, "bare") == args.n

        # The LabelJob, Ready by its status.
        applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "LabelJob", "metadata": {"name": "lj", "namespace": "loom"},
                       "spec": {"datasetRef": {"name": "ds"}, "annotations": [{"uri": "s3://loom/a.csv"}]}})
        splits = {k: {"uri": f"s3://loom/loom/{k}.csv", "digest": D, "rows": 10} for k in ("train", "validation", "test")}
        lj_status = {"phase": "Ready", "observedGeneration": 1, "version": D, "classes": ["a", "b"], "splits": splits}
        api.patch_namespaced_custom_object_status("loom.dev", "v1alpha1", "loom", "labeljobs", "lj", {"status": lj_status})

        # Admission alone (schema, CEL), with no operator running: the cost of the TrainingRuns themselves.
        applier.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "idle"}})
        t0 = time.perf_counter()
        for i in range(args.n):
            api.create_namespaced_custom_object("loom.dev", "v1alpha1", "idle", "trainingruns", {
                "apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": f"tr-{i:05d}", "namespace": "idle"},
                "spec": {"labelJobRef": {"name": "lj"}, "workers": 1}})
        idle_create_s = time.perf_counter() - t0
        k8s.CoreV1Api(api_client).delete_namespace("idle")  # its runs would only wait for a LabelJob

        cluster.apiserver.write_kubeconfig(Path(tmp) / "operator.kubeconfig", token="loom-operator")
        op = OperatorProcess(Path(tmp) / "operator.kubeconfig", cluster.s3_env, Path(tmp) / "operator.log",
                             interval=args.interval).start()
        try:
            # warm up: the operator is watching once it reconciles one run
            applier.apply({"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun",
                           "metadata": {"name": "warmup", "namespace": "loom"}, "spec": {"labelJobRef": {"name": "lj"}}})
            deadline = time.monotonic() + 120
            while count_jobs(api, "loom") < 1:
                assert op.alive() and time.monotonic() < deadline, op.log_tail()
                time.sleep(0.2)
            rss_idle = rss_mib(op.proc.pid)
            lj = api.get_namespaced_custom_object("loom.dev", "v1alpha1", "loom", "labeljobs", "lj")
            assert lj["status"]["phase"] == "Ready", lj["status"]

            audit_from = len(cluster.apiserver.audit)
            cpu0 = cpu_s(op.proc.pid), cpu_s(os.getpid())
            t0 = time.perf_counter()
            for i in range(args.n):
                api.create_namespaced_custom_object("loom.dev", "v1alpha1", "loom", "trainingruns", {
                    "apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun",
                    "metadata": {"name": f"tr-{i:05d}", "namespace": "loom"},
                    "spec": {"labelJobRef": {"name": "lj"}, "workers": 1}})
            created_s = time.perf_counter() - t0
            peak = rss_idle
            while (n := stored_jobs(cluster, "loom") - 1) < args.n:
                assert op.alive(), op.log_tail()
                assert time.perf_counter() - t0 < args.timeout, f"only {n}/{args.n} PyTorchJobs after {args.timeout}s"
                peak = max(peak, rss_mib(op.proc.pid))
                time.sleep(0.05)
            loom_s = time.perf_counter() - t0
            cpu = cpu_s(op.proc.pid) - cpu0[0], cpu_s(os.getpid()) - cpu0[1]
            peak = max(peak, rss_mib(op.proc.pid))
            assert count_jobs(api, "loom") == args.n + 1
            # Steady state: N runs waiting on their (never started) jobs, one reconcile tick each per interval.
            steady0, t1 = cpu_s(op.proc.pid), time.perf_counter()
            time.sleep(2 * args.interval)
            steady_cpu = (cpu_s(op.proc.pid) - steady0) / (time.perf_counter() - t1)
            peak = max(peak, rss_mib(op.proc.pid))
            calls: dict[str, int] = {}
            for a in list(cluster.apiserver.audit)[audit_from:]:
                if a["user"] == "loom-operator":
                    key = f"{a['verb']} {a['resource']}" + (f"/{a['subresource']}" if a["subresource"] else "")
                    calls[key] = calls.get(key, 0) + 1
        finally:
            op.stop()

    result = {
        "n": args.n, "reconcileInterval": args.interval,
        "bareClientLoopSeconds": round(bare_s, 3), "loomSeconds": round(loom_s, 3),
        "trainingRunCreateSeconds": round(created_s, 3),
        "trainingRunCreateSecondsNoOperator": round(idle_create_s, 3),
        "loomAfterLastCreateSeconds": round(loom_s - created_s, 3),
        "ratio": round(bare_s / loom_s, 3), "goal": ">= 0.5",
        "loomJobsPerSecond": round(args.n / loom_s, 1), "bareJobsPerSecond": round(args.n / bare_s, 1),
        "operatorRssMiB": {"idle": round(rss_idle, 1), "peak": round(peak, 1)},
        # CPU used during the timed Loom phase: the operator process, and this process (the
        # embedded API server, S3 and the client loop creating the TrainingRuns).
        "loomPhaseCpuSeconds": {"operator": round(cpu[0], 2), "apiServerAndClient": round(cpu[1], 2)},
        # The operator's CPU (cores) afterwards, with the N runs Pending on their jobs.
        "operatorSteadyCpuCores": round(steady_cpu, 2),
        "operatorRequestsPerRun": {k: round(v / args.n, 2) for k, v in sorted(calls.items())},
    }
    print(json.dumps(result, indent=2))
    print(f"ratio (bare / Loom) = {result['ratio']}: {args.n} PyTorchJobs by a bare loop in {bare_s:.1f}s, "
          f"by the operator from {args.n} TrainingRuns in {loom_s:.1f}s; operator RSS peak {peak:.0f} MiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
