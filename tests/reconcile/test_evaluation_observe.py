"""observe_evaluation, the I/O edge: what it reads (lineage from S3, the champion Deployment) and when."""
from __future__ import annotations

from types import SimpleNamespace

from loom import operator as op
from loom.config import Settings

EV = {"kind": "Evaluation", "metadata": {"name": "ev", "namespace": "team-a", "uid": "u" * 16, "generation": 1},
      "spec": {"trainingRunRef": {"name": "tr"}, "champion": {"deploymentRef": {"name": "iris"}}}}
OBJECTS = {
    "TrainingRun": {"metadata": {"name": "tr"}, "spec": {"labelJobRef": {"name": "lj"}}, "status": {"phase": "Succeeded"}},
    "LabelJob": {"metadata": {"name": "lj"}, "spec": {"datasetRef": {"name": "iris"}}},
    "Dataset": {"metadata": {"name": "iris"}},
    "Deployment": {"metadata": {"name": "iris"}, "status": {"model": {"uri": "s3://m", "digest": "sha256:" + "c" * 64}}},
}


class FakeStorage:
    def __init__(self, objects, fail=False):
        self.objects, self.fail, self.listed = objects, fail, []

    def list(self, prefix):
        self.listed.append(prefix)
        if self.fail:
            raise OSError("S3 unreachable")
        return [SimpleNamespace(uri=u) for u in sorted(self.objects) if u.startswith(prefix)]

    def get_json(self, uri):
        return self.objects[uri]


class FakeCluster:
    def __init__(self, storage, job=None, trainingrun_phase="Succeeded"):
        self.settings = Settings(bucket="loom", s3_endpoint="http://s3:9000")
        self.storage = storage
        self.job = job
        self.phase = trainingrun_phase
        self.read = []

    def loom(self, kind, ns, name):
        self.read.append(kind)
        obj = OBJECTS.get(kind)
        if obj is None or not name or obj["metadata"]["name"] != name:
            return None
        if kind == "TrainingRun":
            obj = dict(obj, status={"phase": self.phase})
        return obj

    def get(self, resource, ns, name):
        return self.job


def test_reads_the_trainingrun_lineage_and_the_champion_before_the_job():
    uri = "s3://loom/team-a/lineage/trainingrun/tr/abc.json"
    storage = FakeStorage({uri: {"job": {"name": "trainingrun/tr"}, "inputs": [], "outputs": []},
                           "s3://loom/team-a/lineage/trainingrun/tr2/x.json": {"job": {}}})
    c = FakeCluster(storage)
    obs = op.observe_evaluation(c, EV)
    assert storage.listed == ["s3://loom/team-a/lineage/trainingrun/tr/"]
    assert [e["_uri"] for e in obs.training_lineage] == [uri] and obs.lineage_error is None
    assert obs.champion["status"]["model"]["digest"].startswith("sha256:cc")


def test_a_storage_error_is_observed_not_raised():
    obs = op.observe_evaluation(FakeCluster(FakeStorage({}, fail=True)), EV)
    assert obs.training_lineage == [] and obs.lineage_error == "OSError: S3 unreachable"


def test_nothing_is_read_while_training_runs_or_once_the_job_exists():
    storage = FakeStorage({})
    c = FakeCluster(storage, trainingrun_phase="Running")
    obs = op.observe_evaluation(c, EV)
    assert storage.listed == [] and obs.champion is None and "Deployment" not in c.read
    c = FakeCluster(storage, job={"metadata": {"name": "ev-eval-g1"}, "status": {}})
    op.observe_evaluation(c, EV)
    assert storage.listed == [] and "Deployment" not in c.read
