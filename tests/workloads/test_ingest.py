import pandas as pd

from loom.workloads import ingest
from loom.workloads._task import execute

from wl_helpers import DATA, ingest_task, run_module, upload_quickstart


def test_ingest_sizes_and_stable_digests(storage, ns):
    uris = upload_quickstart(storage, ns)
    code, r1 = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0, r1
    assert r1["rows"] == 150
    assert {k: v["rows"] for k, v in r1["splits"].items()} == {"train": 105, "validation": 22, "test": 23}
    assert r1["version"].startswith("sha256:")
    assert r1["objects"][0]["digest"] == storage.sha256(uris["iris"])
    # the published result and artifacts
    manifest = storage.get_json(r1["manifestUri"])
    assert manifest["rows"] == 150 and r1["version"].split(":")[1] in r1["manifestUri"]
    ids = set()
    for name, ref in r1["splits"].items():
        assert storage.sha256(ref["uri"]) == ref["digest"]
        df = pd.read_csv(storage.client.get_object("loom", ref["uri"].split("/", 3)[3]))
        assert len(df) == ref["rows"]
        ids |= set(df["id"])
    assert len(ids) == 150  # the splits partition the data

    code, r2 = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0 and r2["version"] == r1["version"] and r2["splits"] == r1["splits"]

    # a different seed: same objects, different split and version
    code, r3 = execute(ingest.main, ingest_task(ns, [uris["iris"]], split={
        "strategy": "random", "seed": 7, "train": 0.7, "validation": 0.15, "test": 0.15}), storage)
    assert code == 0 and r3["version"] != r1["version"]
    assert r3["splits"]["train"]["digest"] != r1["splits"]["train"]["digest"]

    # a changed source changes the version
    text = (DATA / "iris.csv").read_text().replace("iris-000,5.1,3.5", "iris-000,5.2,3.5")
    storage.put_bytes(uris["iris"], text.encode())
    code, r4 = execute(ingest.main, ingest_task(ns, [uris["iris"]]), storage)
    assert code == 0 and r4["version"] != r1["version"]
    assert r4["objects"][0]["digest"] != r1["objects"][0]["digest"]


def test_prefix_source(storage, ns):
    lines = (DATA / "iris.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    storage.put_bytes(f"s3://loom/{ns}/parts/a.csv", "\n".join([header] + rows[:80]).encode())
    storage.put_bytes(f"s3://loom/{ns}/parts/b.csv", "\n".join([header] + rows[80:]).encode())
    code, r = execute(ingest.main, ingest_task(ns, [f"s3://loom/{ns}/parts/"]), storage)
    assert code == 0, r
    assert r["rows"] == 150 and len(r["objects"]) == 2


def _err(storage, ns, task, reason=None):
    code, r = execute(ingest.main, task, storage)
    assert code == 1 and set(r) <= {"error", "reason"} and "error" in r
    if reason:
        assert r.get("reason") == reason, r
    assert storage.get_json(task["resultUri"]) == r
    assert "\n" not in r["error"] and "Traceback" not in r["error"]
    return r["error"]


def test_ingest_errors(storage, ns):
    base = f"s3://loom/{ns}/bad"
    assert "not found: " + f"{base}/nope.csv" in _err(storage, ns, ingest_task(ns, [f"{base}/nope.csv"]), "SourceNotFound")
    assert "no objects under prefix" in _err(storage, ns, ingest_task(ns, [f"{base}/empty/"]), "SourceNotFound")
    storage.put_bytes(f"{base}/malformed.csv", b'id,a,b\n1,2,3\n2,"4,5\n3,4,5,6,7\n')
    assert "malformed CSV" in _err(storage, ns, ingest_task(ns, [f"{base}/malformed.csv"]), "MalformedInput")
    storage.put_bytes(f"{base}/noid.csv", b"key,a\n1,2\n2,3\n")
    assert "id column 'id' not found" in _err(storage, ns, ingest_task(ns, [f"{base}/noid.csv"]), "MissingColumn")
    storage.put_bytes(f"{base}/dup.csv", b"id,a\n1,2\n2,3\n1,4\n" + b"".join(b"%d,1\n" % i for i in range(3, 30)))
    assert "duplicate id" in _err(storage, ns, ingest_task(ns, [f"{base}/dup.csv"]), "DuplicateId")
    storage.put_bytes(f"{base}/tiny.csv", b"id,a\n1,2\n2,3\n3,4\n")
    msg = _err(storage, ns, ingest_task(ns, [f"{base}/tiny.csv"]), "EmptySplit")
    assert "would be empty" in msg
    # nothing was published for any of them
    assert storage.list(f"s3://loom/{ns}/datasets/") == []


def test_ingest_as_subprocess(s3, storage, ns):
    uris = upload_quickstart(storage, ns)
    task = ingest_task(ns, [uris["iris"]])
    proc = run_module("loom.workloads.ingest", task, s3.env())
    assert proc.returncode == 0, proc.stderr
    assert storage.get_json(task["resultUri"])["rows"] == 150
    bad = ingest_task(ns, [f"s3://loom/{ns}/nothing.csv"])
    proc = run_module("loom.workloads.ingest", bad, s3.env())
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr  # logged, not in the result
    assert storage.get_json(bad["resultUri"]) == {"error": f"source object not found: s3://loom/{ns}/nothing.csv",
                                                  "reason": "SourceNotFound"}
