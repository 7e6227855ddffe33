"""observe_trainingrun at scale: parents and jobs from the kopf indexes (a GET only on a miss),
S3 read only once the job has started, and one status write per transition."""
from __future__ import annotations

import datetime as dt

from loom import operator as op
from loom.config import Settings
from loom.reconcile import trainingrun

S = Settings(bucket="loom", s3_endpoint="http://s3:9000")
NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
D = "sha256:" + "a" * 64
SPLITS = {k: {"uri": f"s3://loom/team-a/{k}.csv", "digest": D, "rows": 10} for k in ("train", "validation", "test")}
LJ = {"apiVersion": "loom.dev/v1alpha1", "kind": "LabelJob", "metadata": {"name": "lj", "namespace": "team-a"},
      "spec": {"datasetRef": {"name": "ds"}}, "status": {"phase": "Ready", "version": D, "classes": ["a", "b"], "splits": SPLITS}}
TR = {"apiVersion": "loom.dev/v1alpha1", "kind": "TrainingRun",
      "metadata": {"name": "tr", "namespace": "team-a", "uid": "0123456789abcdef", "generation": 1},
      "spec": {"labelJobRef": {"name": "lj"}}, "status": {}}
LABELJOBS = (op.GROUP, op.VERSION, "labeljobs")


class Storage:
    def __init__(self):
        self.read = []

    def get_json(self, uri):
        self.read.append(uri)
        return {"step": 3, "totalSteps": 10}


class Cluster(op.Cluster):
    """The real Cluster with its API calls recorded (and answered 404) instead of sent."""

    def __init__(self, indexes):
        super().__init__(S)
        self._storage = Storage()
        self.indexes = indexes
        self.gets = []

    def get(self, resource, namespace, name):
        self.gets.append((resource[2], name))
        return None


def test_an_index_hit_is_a_copy_and_needs_no_get():
    index = {("team-a", "lj"): [LJ]}
    c = Cluster({LABELJOBS: index})
    got = c.loom("LabelJob", "team-a", "lj")
    assert got == LJ and c.gets == []
    got["status"]["phase"] = "Failed"
    assert index[("team-a", "lj")][0]["status"]["phase"] == "Ready"
    assert c.loom("LabelJob", "team-a", "other") is None and c.gets == [("labeljobs", "other")]


def test_a_new_run_reads_its_job_by_get_when_the_index_has_not_seen_it():
    c = Cluster({LABELJOBS: {("team-a", "lj"): [LJ]}, op.PYTORCHJOBS: {}})
    obs = op.observe_trainingrun(c, TR)
    # The job: GET (the watch may lag behind a create); the LabelJob: the index; the Dataset: missing, so GET.
    assert c.gets == [("pytorchjobs", "tr-g1"), ("datasets", "ds")]
    assert obs.job is None and obs.labeljob == LJ and c.storage.read == []


def test_a_job_that_has_not_started_costs_no_api_call_and_no_s3_read():
    job = {"metadata": {"name": "tr-g1"}, "spec": {"runPolicy": {}}, "status": {}}
    c = Cluster({op.PYTORCHJOBS: {("team-a", "tr-g1"): [job]}})
    obs = op.observe_trainingrun(c, TR)
    assert obs.job == job and c.gets == [] and c.storage.read == []


def test_a_running_or_suspended_job_has_its_progress_read():
    running = {"metadata": {"name": "tr-g1"}, "status": {"conditions": [{"type": "Running", "status": "True"}]}}
    suspended = {"metadata": {"name": "tr-g1"}, "spec": {"runPolicy": {"suspend": True}}, "status": {}}
    for job in (running, suspended):
        c = Cluster({op.PYTORCHJOBS: {("team-a", "tr-g1"): [job]}})
        obs = op.observe_trainingrun(c, TR)
        assert len(c.storage.read) == 2 and obs.progress == {"step": 3, "totalSteps": 10}


def test_creating_the_job_and_seeing_it_unstarted_is_one_status_write():
    created = trainingrun.plan(TR, trainingrun.Observed(labeljob=LJ), S, NOW)
    assert created.create and created.status["phase"] == "Pending"
    after = dict(TR, status=created.status)
    job = {"metadata": {"name": "tr-g1"}, "spec": {"runPolicy": {}}, "status": {}}
    later = trainingrun.plan(after, trainingrun.Observed(job=job), S, NOW + dt.timedelta(seconds=2))
    assert op.status_patch(after["status"], later.status) == {}
    assert not later.create and not later.events


def test_a_body_that_lags_behind_our_status_write_is_planned_with_what_we_wrote():
    written = op.WrittenStatus()
    before = {"metadata": {"uid": "u1", "resourceVersion": "5"}, "status": {"phase": "Pending"}}
    written.remember(before, {"metadata": {"uid": "u1", "resourceVersion": "9"}, "status": {"phase": "Running"}})
    # kopf still hands over version 5: the status our write produced (version 9) is the current one.
    assert written.current(dict(before))["status"] == {"phase": "Running"}
    # The watch has caught up (9, or anything newer): the body as it is, and the record is dropped.
    fresh = {"metadata": {"uid": "u1", "resourceVersion": "12"}, "status": {"phase": "Failed"}}
    assert written.current(fresh) is fresh
    assert written.current(dict(before)) == before
