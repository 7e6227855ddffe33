"""The kopf layer: observe, plan, apply. Run it with `python -m loom.operator`.

Each kind is reconciled level-triggered on a short timer: observe the resource's
inputs and children, ask the pure planner what should be, and apply the
difference. Nothing here decides anything; a restart at any point converges.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
from typing import Any, Callable

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from loom import GROUP, VERSION
from loom.api import kind_info
from loom.backends.jobs import job_outcome
from loom.backends import rounds
from loom.backends.pytorchjob import is_suspended, pytorchjob_outcome
from loom.backends.storage import Storage
from loom.config import Settings
from loom.lineage import record as lineage_record
from loom.reconcile import dataset, deployment, evaluation, labeljob, trainingrun
from loom.reconcile.common import Plan, StatusBuilder
from loom.reconcile.steps import StepObserved, is_settled, result_uri

log = logging.getLogger("loom.operator")
SETTINGS = Settings.from_env()
JOBS = ("batch", "v1", "jobs")
PYTORCHJOBS = ("kubeflow.org", "v1", "pytorchjobs")
INFERENCESERVICES = ("serving.kserve.io", "v1beta1", "inferenceservices")


def _resource(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(group, version, plural) of an object Loom owns or creates."""
    group, _, version = obj["apiVersion"].rpartition("/")
    if group == GROUP:
        return group, version, kind_info(obj["kind"]).plural
    return {"Job": JOBS, "PyTorchJob": PYTORCHJOBS, "InferenceService": INFERENCESERVICES,
            "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs")}[obj["kind"]]


class Cluster:
    """The operator's I/O with the API server and object storage, kept at the edge.

    CustomObjectsApi serves every group's REST paths (batch/v1 included), so one
    client reads and writes all kinds as plain dicts.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.custom = k8s.CustomObjectsApi(k8s.ApiClient())
        self._storage: Storage | None = None
        # kopf indexes (see INDEXED): resource -> kopf.Index by (namespace, name); set by the timers.
        self.indexes: dict[tuple[str, str, str], Any] = {}

    @property
    def storage(self) -> Storage:
        if self._storage is None:  # connect on first use, not at import
            self._storage = Storage.from_env()
        return self._storage

    def cached(self, resource: tuple[str, str, str], namespace: str, name: str | None) -> dict[str, Any] | None:
        """The object as the operator's watch last saw it, or None when the watch has not seen it.

        None is no proof of absence (the watch can lag behind a create): callers GET then."""
        index = self.indexes.get(resource)
        if index is None or not name:
            return None
        try:
            found = list(index.get((namespace, name), ()))
        except RuntimeError:  # changed by the event loop while read from this worker thread
            return None
        return copy.deepcopy(found[0]) if found else None

    def get(self, resource: tuple[str, str, str], namespace: str, name: str | None) -> dict[str, Any] | None:
        if not name:
            return None
        group, version, plural = resource
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def loom(self, kind: str, namespace: str, name: str | None) -> dict[str, Any] | None:
        resource = (GROUP, VERSION, kind_info(kind).plural)
        return self.cached(resource, namespace, name) or self.get(resource, namespace, name)

    def read_result(self, uri: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return self.storage.get_json(uri), None
        except Exception as exc:  # noqa: BLE001 - the message goes into a condition
            return None, f"{type(exc).__name__}: {exc}"

    def create(self, manifest: dict[str, Any]) -> None:
        group, version, plural = _resource(manifest)
        try:
            self.custom.create_namespaced_custom_object(group, version, manifest["metadata"]["namespace"], plural, manifest)
        except ApiException as exc:
            if exc.status != 409:  # already there: a previous pass created it
                raise

    def merge_patch(self, obj: dict[str, Any], patch: dict[str, Any]) -> None:
        group, version, plural = _resource(obj)
        meta = obj["metadata"]
        self.custom.patch_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"], patch)

    def patch_status(self, body: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch status; the object as the server has it after the write."""
        group, version, plural = _resource(body)
        meta = body["metadata"]
        return self.custom.patch_namespaced_custom_object_status(group, version, meta["namespace"], plural,
                                                                 meta["name"], {"status": patch})

    def write_lineage(self, namespace: str, record: Any) -> None:
        lineage_record.write(self.storage, self.settings.bucket, namespace, record)


CLUSTER: Cluster | None = None


def cluster() -> Cluster:
    global CLUSTER
    if CLUSTER is None:
        CLUSTER = Cluster(SETTINGS)
    return CLUSTER


def _step(c: Cluster, body: dict[str, Any], job_name: str) -> StepObserved:
    """A Job-backed step's child, and its result once the Job has finished."""
    job = c.get(JOBS, body["metadata"]["namespace"], job_name)
    obs = StepObserved(job=job)
    if job_outcome(job) in ("succeeded", "failed"):
        obs.result, obs.result_error = c.read_result(result_uri(c.settings, body))
    return obs


def _ref(body: dict[str, Any], field: str) -> str | None:
    ref = (body.get("spec") or {}).get(field)
    return ref.get("name") if isinstance(ref, dict) else None


def observe_dataset(c: Cluster, body: dict[str, Any]):
    base = _step(c, body, dataset.job_name(body))
    ns, spec = body["metadata"]["namespace"], body.get("spec") or {}
    return dataset.Observed(job=base.job, result=base.result, result_error=base.result_error,
                            frozen_from=c.loom("Dataset", ns, _ref({"spec": spec.get("split")}, "frozenTestFrom")),
                            baseline=c.loom("Dataset", ns, _ref({"spec": spec.get("drift")}, "baselineFrom")))


def observe_labeljob(c: Cluster, body: dict[str, Any]):
    base = _step(c, body, labeljob.job_name(body))
    return labeljob.Observed(job=base.job, result=base.result, result_error=base.result_error,
                             dataset=c.loom("Dataset", body["metadata"]["namespace"], _ref(body, "datasetRef")))


TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
LOCALQUEUES = ("kueue.x-k8s.io", "v1beta1", "localqueues")


def observe_localqueue(c: Cluster, namespace: str, queue: str) -> str:
    """'found', 'missing', or 'no-kueue' when the cluster does not serve Kueue's API at all."""
    if c.get(LOCALQUEUES, namespace, queue) is not None:
        return "found"
    try:  # a 404 for the object, or for the whole API? Discovery tells them apart.
        c.custom.api_client.call_api("/apis/kueue.x-k8s.io/v1beta1", "GET", response_type="object",
                                     auth_settings=["BearerToken"], _return_http_data_only=True)
    except ApiException as exc:
        if exc.status == 404:
            return "no-kueue"
        raise
    return "missing"


def observe_trainingrun(c: Cluster, body: dict[str, Any]):
    """Only what the planner needs at this stage: a thousand runs tick every interval."""
    from loom.reconcile.steps import is_settled

    if is_settled(body):  # finished for this generation: the planner reads nothing
        return trainingrun.Observed()
    ns = body["metadata"]["namespace"]
    trainjob = trainingrun.backend_of(body) == "trainjob"
    name = trainingrun.job_name(body)
    # The job as the PyTorchJob watch last saw it; if the watch has not seen it, always read:
    # the body kopf hands us can lag behind our own status write, and a second create (409)
    # would post a second "Created" event.
    resource = TRAINJOBS if trainjob else PYTORCHJOBS
    job = c.cached(resource, ns, name) or c.get(resource, ns, name)
    obs = trainingrun.Observed(job=job)
    state = (trainingrun.trainjob.trainjob_outcome if trainjob else pytorchjob_outcome)(job)[0]
    if job is None or state in ("succeeded", "failed"):  # to create the job, or for the lineage record
        obs.labeljob = c.loom("LabelJob", ns, _ref(body, "labelJobRef"))
    if job is None and (obs.labeljob or {}).get("status", {}).get("phase") == "Ready":
        obs.dataset = c.loom("Dataset", ns, _ref(obs.labeljob, "datasetRef"))
        queue = (body.get("spec") or {}).get("queue")
        if queue:
            obs.queue = observe_localqueue(c, ns, queue)
    if state in ("succeeded", "failed"):
        obs.result, obs.result_error = c.read_result(result_uri(c.settings, body))
    elif job is not None and (state in ("running", "restarting", "suspended") or is_suspended(job)):
        # Live progress and the latest checkpoint, written by the rank-0 trainer: only once the
        # job has started (or was preempted); before that there is nothing to read, and a
        # thousand pending runs would cost two S3 reads each per tick.
        obs.progress, _ = c.read_result(trainingrun.progress_uri(c.settings, body))
        obs.checkpoint, _ = c.read_result(trainingrun.checkpoint_index_uri(c.settings, body))
    return obs


def observe_evaluation(c: Cluster, body: dict[str, Any]):
    ns = body["metadata"]["namespace"]
    tr = c.loom("TrainingRun", ns, _ref(body, "trainingRunRef"))
    lj = c.loom("LabelJob", ns, _ref(tr, "labelJobRef")) if tr else None
    ds = c.loom("Dataset", ns, _ref(lj, "datasetRef")) if lj else None
    base = _step(c, body, evaluation.job_name(body))
    obs = evaluation.Observed(job=base.job, result=base.result, result_error=base.result_error,
                              trainingrun=tr, labeljob=lj, dataset=ds)
    # The leakage proof and the champion are read once, when the Job is about to be created.
    trained = tr is not None and (tr.get("status") or {}).get("phase") == "Succeeded"
    if base.job is None and trained and not is_settled(body):
        champion = (body.get("spec") or {}).get("champion")
        if isinstance(champion, dict):
            obs.champion = c.loom("Deployment", ns, (champion.get("deploymentRef") or {}).get("name"))
        obs.training_lineage, obs.lineage_error = _lineage_events(c, ns, "trainingrun", tr["metadata"]["name"])
    return obs


def _lineage_events(c: Cluster, ns: str, kind: str, name: str) -> tuple[list[dict[str, Any]], str | None]:
    """A step's OpenLineage RunEvents from S3 (each with "_uri"), or the read error."""
    try:
        events = []
        for obj in c.storage.list(f"s3://{c.settings.bucket}/{ns}/lineage/{kind}/{name}/"):
            event = c.storage.get_json(obj.uri)
            if isinstance(event, dict):
                events.append(dict(event, _uri=obj.uri))
        return events, None
    except Exception as exc:  # noqa: BLE001 - the message goes into a condition
        return [], f"{type(exc).__name__}: {exc}"


def observe_deployment(c: Cluster, body: dict[str, Any]):
    ns = body["metadata"]["namespace"]
    ev = c.loom("Evaluation", ns, _ref(body, "evaluationRef"))
    isvc = c.get(INFERENCESERVICES, ns, body["metadata"]["name"])
    return deployment.Observed(
        evaluation=ev,
        isvc=isvc,
        trainingrun=c.loom("TrainingRun", ns, _ref(ev, "trainingRunRef")) if ev else None,
        # metric queries and webhooks of a due analysis round (none when no round is due)
        round=rounds.run_round(body, isvc, dt.datetime.now(dt.timezone.utc)),
    )


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch from current to desired status: changed keys, and null for removed ones."""
    patch = {k: v for k, v in desired.items() if current.get(k) != v}
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


def apply(c: Cluster, body: dict[str, Any], plan: Plan) -> None:
    for child in plan.create:
        c.create(child)
    for child, child_patch in plan.patch:
        c.merge_patch(child, child_patch)
    for record in plan.lineage:
        c.write_lineage(body["metadata"]["namespace"], record)
    # Written here, not through kopf's patch, so that a refused write is ours to report.
    delta = status_patch(dict(body.get("status") or {}), plan.status)
    if delta:
        WRITTEN.remember(body, c.patch_status(body, delta))
    for event in plan.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


class WrittenStatus:
    """The status each object got from our last status write, until kopf's body shows it.

    A busy operator's watch lags behind its own writes: the body a timer gets can still be
    the version before our last status patch. Planned against it, the same patch would be
    sent again on every tick until the watch catches up (a feedback loop under load). When
    the body is exactly the version our write replaced, the status that write produced is
    the current one. Any other version (ours or newer) is fresh: the body is used as it is.
    """

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self._by_uid: dict[str, tuple[str, str, dict[str, Any]]] = {}  # uid -> (rv before, rv after, status)

    def remember(self, before: dict[str, Any], after: Any) -> None:
        meta, new_meta = before.get("metadata") or {}, (after or {}).get("metadata") if isinstance(after, dict) else None
        if not new_meta or not meta.get("uid") or not meta.get("resourceVersion"):
            return
        if len(self._by_uid) >= self.limit:  # entries of deleted objects: never more than this
            self._by_uid.clear()
        self._by_uid[meta["uid"]] = (meta["resourceVersion"], new_meta.get("resourceVersion"), after.get("status") or {})

    def current(self, raw: dict[str, Any]) -> dict[str, Any]:
        meta = raw.get("metadata") or {}
        entry = self._by_uid.get(meta.get("uid"))
        if entry is None:
            return raw
        if meta.get("resourceVersion") != entry[0]:
            self._by_uid.pop(meta.get("uid"), None)  # the watch has caught up
            return raw
        return {**raw, "status": copy.deepcopy(entry[2])}


WRITTEN = WrittenStatus()


def reconcile(kind: str, observe: Callable, planner: Callable, body: kopf.Body, logger: Any) -> None:
    raw = WRITTEN.current(dict(body))
    raw.setdefault("kind", kind)
    c = cluster()
    try:
        plan = planner(raw, observe(c, raw), c.settings, dt.datetime.now(dt.timezone.utc))
        apply(c, raw, plan)
    except ApiException as exc:
        if exc.status != 422:  # a transient API error (conflict, timeout): the next tick tries again
            logger.warning(f"{kind} reconcile deferred: API {exc.status} {exc.reason}")
            return
        # Refused by the schema: a bug on our side, shown on the resource.
        message = _api_message(exc)
        logger.error(f"{kind} write refused by the API: {message}")
        _report_error(c, raw, message, logger)
    except Exception as exc:  # noqa: BLE001 - the operator never crashes on one resource
        logger.exception(f"{kind} reconcile error")
        _report_error(c, raw, f"{type(exc).__name__}: {exc}", logger)


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"API {exc.status} {exc.reason}"


def _report_error(c: Cluster, body: dict[str, Any], message: str, logger: Any) -> None:
    """A ReconcileError condition on the resource; if even that is refused, the log keeps it."""
    sb = StatusBuilder(body, dt.datetime.now(dt.timezone.utc))
    sb.condition("ReconcileError", True, "InternalError", message.splitlines()[0][:500])
    try:
        c.patch_status(body, {"conditions": sb.status["conditions"]})
    except Exception as exc:  # noqa: BLE001
        logger.error(f"could not report the error on the resource: {exc}")


def _register(kind: str, observe: Callable, planner: Callable) -> None:
    plural = kind_info(kind).plural

    def tick(body: kopf.Body, logger: Any, **kwargs: Any) -> None:
        c = cluster()
        c.indexes = {resource: kwargs[index_id] for resource, index_id in INDEXED.items() if index_id in kwargs}
        reconcile(kind, observe, planner, body, logger)

    tick.__name__ = f"reconcile_{plural}"
    kopf.timer(GROUP, VERSION, plural, interval=SETTINGS.reconcile_interval, id="reconcile")(tick)


# Informer caches (kopf indexes, filled by the watches kopf runs anyway for the Loom kinds):
# the parents a thousand TrainingRuns read on every tick, and the runs' PyTorchJobs, read
# from memory instead of one GET each per run per tick. Level-triggered and restart-safe:
# kopf fills the indexes from a fresh list before any handler runs, and a miss falls back
# to a GET (Cluster.cached).
INDEXED = {
    (GROUP, VERSION, "datasets"): "loom_dataset_index",
    (GROUP, VERSION, "labeljobs"): "loom_labeljob_index",
    PYTORCHJOBS: "loom_pytorchjob_index",
}


@kopf.index(GROUP, VERSION, "datasets", id="loom_dataset_index")
@kopf.index(GROUP, VERSION, "labeljobs", id="loom_labeljob_index")
def index_parent(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): copy.deepcopy(dict(body))}


@kopf.index(*PYTORCHJOBS, id="loom_pytorchjob_index", labels={"app.kubernetes.io/managed-by": "loom"})
def index_pytorchjob(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    # What the TrainingRun planner reads of its job (conditions, times, suspend), not the pod templates.
    spec = body.get("spec") or {}
    return {(namespace, name): copy.deepcopy({
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: v for k, v in body["metadata"].items() if k != "managedFields"},
        "spec": {"runPolicy": spec.get("runPolicy") or {}}, "status": body.get("status") or {}})}


_register("Dataset", observe_dataset, dataset.plan)
_register("LabelJob", observe_labeljob, labeljob.plan)
_register("TrainingRun", observe_trainingrun, trainingrun.plan)
_register("Evaluation", observe_evaluation, evaluation.plan)
_register("Deployment", observe_deployment, deployment.plan)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    # Progress and diff-base go to annotations: status belongs to Loom's schema alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="loom.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="loom.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.execution.max_workers = int(os.environ.get("LOOM_WORKERS", "8"))


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOOM_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kopf.run(
        clusterwide=True,
        standalone=True,
        liveness_endpoint=os.environ.get("LOOM_LIVENESS_ENDPOINT"),
    )


if __name__ == "__main__":
    main()
