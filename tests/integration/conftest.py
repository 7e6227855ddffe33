"""One embedded cluster and one real operator process for the integration tests."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import config as k8s_config

from loom import demo
from loom.backends.storage import Storage
from loom.local.cluster import EmbeddedCluster
from loom.local.operatorproc import OperatorProcess
from loom.manifests import Applier, load

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_TOKEN = "loom-operator"


class Env:
    def __init__(self, cluster: EmbeddedCluster, operator: OperatorProcess, applier: Applier):
        self.cluster = cluster
        self.operator = operator
        self.applier = applier
        self.storage = Storage.from_env(cluster.s3_env)

    def start_operator(self) -> OperatorProcess:
        workdir = self.cluster.workdir
        self.operator = OperatorProcess(workdir / "operator.kubeconfig", self.cluster.s3_env,
                                        workdir / "operator.log", interval=0.5).start()
        return self.operator

    def quickstart(self, name: str, ns: str | None = None) -> list[dict[str, Any]]:
        """The quickstart's manifests in `name`; with `ns`, moved into that namespace."""
        docs = load(ROOT / "examples" / "quickstart" / name, demo.template_vars(self.cluster.s3_env))
        if ns:
            for doc in docs:
                doc["metadata"]["name" if doc["kind"] == "Namespace" else "namespace"] = ns
        return docs

    def tenant(self, ns: str) -> str:
        """A namespace with the quickstart's S3 Secret and ServiceAccount in it."""
        self.applier.apply_all(self.quickstart("00-namespace.yaml", ns))
        return ns

    def get(self, kind: str, name: str, ns: str = "quickstart") -> dict[str, Any]:
        return self.applier.get("loom.dev/v1alpha1", kind, name, ns) or {}

    def wait(self, kind: str, name: str, until: Callable[[dict[str, Any]], bool], timeout: float = 180,
             ns: str = "quickstart") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.get(kind, name, ns)
            if obj and until(obj):
                return obj
            assert self.operator.alive(), "the operator died:\n" + self.operator.log_tail()
            time.sleep(0.3)
        raise AssertionError(f"{kind}/{name} did not reach the expected state in {timeout}s; last status: {obj.get('status')}")

    def wait_phase(self, kind: str, name: str, phases: set[str] | str, **kw: Any) -> dict[str, Any]:
        phases = {phases} if isinstance(phases, str) else phases
        return self.wait(kind, name, lambda o: (o.get("status") or {}).get("phase") in phases, **kw)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("cluster")
    with EmbeddedCluster(workdir) as cluster:
        applier = Applier(k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        demo.install_crds(applier)
        demo.upload_example_data(cluster.s3_env)
        # The operator gets its own token, so the API server's audit tells its calls apart.
        cluster.apiserver.write_kubeconfig(workdir / "operator.kubeconfig", token=OPERATOR_TOKEN)
        e = Env(cluster, None, applier)
        e.start_operator()
        try:
            yield e
        finally:
            e.operator.stop()
