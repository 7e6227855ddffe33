"""Fixtures for the workload tests: an embedded S3 and the quickstart data in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from loom.local.s3 import EmbeddedS3, free_port
from loom.workloads import ingest, label
from loom.workloads._task import execute

from wl_helpers import ingest_task, label_task, train_task, upload_quickstart


@pytest.fixture(scope="session")
def s3():
    server = EmbeddedS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def storage(s3):
    return s3.storage()


@pytest.fixture
def ns():
    """A fresh namespace prefix per test (moto state is shared by the session)."""
    return "t-" + uuid.uuid4().hex[:8]


@pytest.fixture
def labelled(storage, ns):
    """The quickstart data ingested and labelled: (namespace, ingest result, label result)."""
    uris = upload_quickstart(storage, ns)
    code, ds = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0, ds
    code, lb = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert code == 0 and lb["passed"], lb
    return ns, ds, lb


@pytest.fixture(scope="session")
def trained(s3, storage):
    """Ingest, label, then train with WORLD_SIZE=2: two real DDP processes (gloo).

    Returns (namespace, label result, train result, [stderr of rank 0, rank 1]).
    """
    ns = "trained-" + uuid.uuid4().hex[:6]
    uris = upload_quickstart(storage, ns)
    code, ds = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0, ds
    code, lb = execute(label.main, label_task(ns, ds, [uris["annotations"]]), storage)
    assert code == 0, lb
    task = train_task(ns, lb)
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, **s3.env(), "LOOM_TASK": json.dumps(task), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0"}
        procs.append(subprocess.Popen([sys.executable, "-m", "loom.workloads.train"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        _, err = p.communicate(timeout=180)
        outs.append((p.returncode, err))
    assert [c for c, _ in outs] == [0, 0], "\n\n".join(e[-3000:] for _, e in outs)
    result = storage.get_json(task["resultUri"])
    return ns, lb, result, [e for _, e in outs]
