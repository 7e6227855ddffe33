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


# -- formats, schema, strategies, frozen test, drift, card ---------------------------

import http.server  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

PROV = {"owner": "t", "license": "CC0-1.0", "consent": "synthetic", "collectedAt": "2024-01-01T00:00:00Z"}
SCHEMA = [
    {"column": "id", "type": "string", "nullable": False},
    {"column": "patient", "type": "string", "nullable": False},
    {"column": "age", "type": "integer", "min": 0, "max": 120},
    {"column": "value", "type": "number"},
    {"column": "label", "type": "string", "allowedValues": ["a", "b", "c"]},
    {"column": "ts", "type": "timestamp"},
]


def visits(n_patients=30, seed=0, shift=0.0, prefix="v"):
    """Many rows per patient, shuffled times: data that tempts leakage."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for v in range(int(rng.integers(2, 12))):
            rows.append({"id": f"{prefix}{p:03d}-{v:02d}", "patient": f"p{p:03d}", "age": int(20 + p),
                         "value": round(float(rng.normal(shift, 1)), 4), "label": ["a", "b", "c"][p % 3],
                         "ts": (pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=int(rng.integers(0, 360)))).strftime("%Y-%m-%dT%H:%M:%SZ")})
    rng.shuffle(rows)
    return rows


def put_jsonl(storage, uri, rows):
    storage.put_bytes(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())


def put_parquet(storage, uri, rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    storage.put_bytes(uri, buf.getvalue())


def task_for(ns, sources, name="visits", **over):
    task = ingest_task(ns, [], name=name, outputPrefix=f"s3://loom/{ns}/datasets/{name}/")
    task["sources"] = [{"uri": u, "format": f, "provenance": PROV} for u, f in sources]
    task["schema"] = SCHEMA
    task.update(over)
    return task


def test_group_split_from_jsonl_and_parquet_with_card(storage, ns):
    rows = visits()
    put_jsonl(storage, f"s3://loom/{ns}/src/a.jsonl", rows[:100])
    put_parquet(storage, f"s3://loom/{ns}/src/b.parquet", rows[100:])
    # exact duplicates across the two files
    put_jsonl(storage, f"s3://loom/{ns}/src/dups.jsonl", rows[:7])
    task = task_for(ns, [(f"s3://loom/{ns}/src/a.jsonl", "jsonl"), (f"s3://loom/{ns}/src/b.parquet", "parquet"),
                         (f"s3://loom/{ns}/src/dups.jsonl", "jsonl")],
                    split={"strategy": "group", "groupColumn": "patient", "seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2})
    code, r = execute(ingest.main, task, storage)
    assert code == 0, r
    assert r["rowsRead"] == len(rows) + 7 and r["duplicatesRemoved"] == 7 and r["rows"] == len(rows)
    assert r["leakage"] == {"entityColumn": "patient", "entityOverlap": 0, "rowOverlap": 0}
    patients = {}
    for name, ref in r["splits"].items():
        df = pd.read_csv(io.BytesIO(storage.get_bytes(ref["uri"])), dtype=str)  # CSV with a header, as read_split reads
        assert len(df) == ref["rows"] > 0
        for p in set(df["patient"]):
            assert p not in patients
            patients[p] = name
    card = storage.get_json(r["dataCard"]["uri"])
    assert storage.sha256(r["dataCard"]["uri"]) == r["dataCard"]["digest"]
    assert card["provenance"][0]["license"] == "CC0-1.0" and card["schema"] == SCHEMA
    assert card["statistics"]["duplicatesRemoved"] == 7 and card["statistics"]["columns"]["age"]["min"] == 20.0
    assert card["leakage"]["entityOverlap"] == 0
    md = storage.get_bytes(r["dataCard"]["markdownUri"]).decode()
    assert "## Provenance" in md and "CC0-1.0" in md and "## Leakage" in md and "7 exact duplicates removed" in md
    report = storage.get_json(r["report"]["uri"])
    assert report["columns"]["label"]["top"][0]["value"] in "abc"
    # the same sources give the same version
    code, again = execute(ingest.main, dict(task, resultUri=task["resultUri"] + ".2"), storage)
    assert again["version"] == r["version"] and again["splits"] == r["splits"]


def test_time_split_and_frozen_test_reuse(storage, ns):
    rows = visits(seed=3)
    put_jsonl(storage, f"s3://loom/{ns}/src/t.jsonl", rows)
    cut = {"validation": "2024-08-01T00:00:00Z", "test": "2024-11-01T00:00:00Z"}
    task = task_for(ns, [(f"s3://loom/{ns}/src/t.jsonl", "jsonl")], name="t1",
                    split={"strategy": "time", "timeColumn": "ts", "cutoffs": cut})
    code, first = execute(ingest.main, task, storage)
    assert code == 0, first
    assert first["leakage"]["timeOrderViolations"] == 0
    test = pd.read_csv(io.BytesIO(storage.get_bytes(first["splits"]["test"]["uri"])), dtype=str)
    assert (pd.to_datetime(test["ts"], utc=True) >= pd.Timestamp(cut["test"])).all()

    # a later version: more rows (some in the test period), frozen test split kept by reference
    more = visits(seed=4, prefix="w")
    put_jsonl(storage, f"s3://loom/{ns}/src/t2.jsonl", more)
    frozen = dict(first["splits"]["test"], **{"from": "t1"})
    task2 = task_for(ns, [(f"s3://loom/{ns}/src/t.jsonl", "jsonl"), (f"s3://loom/{ns}/src/t2.jsonl", "jsonl")], name="t2",
                     split={"strategy": "time", "timeColumn": "ts", "cutoffs": cut, "frozenTestFrom": {"name": "t1"}},
                     frozenTest=frozen)
    code, second = execute(ingest.main, task2, storage)
    assert code == 0, second
    assert second["splits"]["test"]["digest"] == first["splits"]["test"]["digest"]
    assert second["frozenTest"]["from"] == "t1"
    assert second["excludedRows"] == sum(1 for r in rows + more if r["ts"] >= cut["test"])
    assert second["leakage"]["rowOverlap"] == 0 and second["leakage"]["timeOrderViolations"] == 0
    report = storage.get_json(second["report"]["uri"])
    assert report["rows"] == second["rows"] == sum(s["rows"] for s in second["splits"].values())
    assert report["excludedRows"] == second["excludedRows"]


def test_drift_against_a_baseline_version(storage, ns):
    put_jsonl(storage, f"s3://loom/{ns}/src/v1.jsonl", visits(seed=5))
    put_jsonl(storage, f"s3://loom/{ns}/src/v2.jsonl", visits(seed=6, shift=2.0))
    t1 = task_for(ns, [(f"s3://loom/{ns}/src/v1.jsonl", "jsonl")], name="d")
    code, v1 = execute(ingest.main, t1, storage)
    assert code == 0 and v1["drift"] is None
    baseline = {"name": "d", "version": v1["version"], "splits": v1["splits"]}
    t2 = task_for(ns, [(f"s3://loom/{ns}/src/v2.jsonl", "jsonl")], name="d", baseline=baseline, drift={"maxPsi": 0.2})
    code, v2 = execute(ingest.main, t2, storage)
    assert code == 0, v2
    assert v2["drift"]["detected"] and "value" in v2["drift"]["driftedColumns"]
    assert v2["drift"]["baselineVersion"] == v1["version"] and "value (" in v2["drift"]["message"]
    card = storage.get_json(v2["dataCard"]["uri"])
    value = next(c for c in card["drift"]["columns"] if c["column"] == "value")
    assert value["test"] == "ks" and value["statistic"] > 0.5 and value["psi"] > 0.2
    # failOnDrift turns it into a failure, and nothing is written
    t3 = task_for(ns, [(f"s3://loom/{ns}/src/v2.jsonl", "jsonl")], name="d3", baseline=baseline,
                  drift={"failOnDrift": True})
    assert "drift against" in _err(storage, ns, t3, "DriftDetected")
    assert storage.list(f"s3://loom/{ns}/datasets/d3/") == []


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_source(storage, ns, tmp_path):
    (tmp_path / "iris.csv").write_bytes((DATA / "iris.csv").read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/iris.csv"
        code, r = execute(ingest.main, ingest_task(ns, [url]), storage)
        assert code == 0, r
        import hashlib

        assert r["objects"] == [{"uri": url, "digest": "sha256:" + hashlib.sha256((DATA / "iris.csv").read_bytes()).hexdigest(),
                                 "bytes": (DATA / "iris.csv").stat().st_size}]
        assert "HTTP 404" in _err(storage, ns, ingest_task(ns, [url + ".missing"]), "SourceNotFound")
    finally:
        server.shutdown()


def test_bad_inputs_fail_with_a_reason_and_write_nothing(storage, ns):
    rows = visits(seed=7)
    src = f"s3://loom/{ns}/src/"

    def bad(name, rows_or_bytes, fmt="jsonl", **over):
        uri = f"{src}{name}.{fmt}"
        if isinstance(rows_or_bytes, bytes):
            storage.put_bytes(uri, rows_or_bytes)
        else:
            put_jsonl(storage, uri, rows_or_bytes)
        return task_for(ns, [(uri, fmt)], name=name, **over)

    msg = _err(storage, ns, bad("badtype", [dict(r, age="old") if i % 5 == 0 else r for i, r in enumerate(rows)]), "SchemaViolation")
    assert "column 'age'" in msg and f"{len(range(0, len(rows), 5))} of {len(rows)} rows are not of type integer" in msg and "'old'" in msg
    msg = _err(storage, ns, bad("nocol", [{k: v for k, v in r.items() if k != "label"} for r in rows]), "MissingColumn")
    assert "declared column 'label' not found" in msg
    msg = _err(storage, ns, bad("range", [dict(r, age=200) if i == 3 else r for i, r in enumerate(rows)]), "SchemaViolation")
    assert "above the maximum 120" in msg and "'200'" in msg
    assert "line 2 is not valid JSON" in _err(storage, ns, bad("malformed", b'{"id": "1"}\n{oops\n'), "MalformedInput")
    assert "malformed Parquet" in _err(storage, ns, bad("pq", b"PAR1garbage", "parquet"), "MalformedInput")
    one = [dict(r, patient="p000") for r in rows]
    msg = _err(storage, ns, bad("one", one, split={"strategy": "group", "groupColumn": "patient"}), "TooFewEntities")
    assert "found 1" in msg
    msg = _err(storage, ns, bad("empty", rows, split={"strategy": "time", "timeColumn": "ts", "cutoffs": {
        "validation": "2030-01-01T00:00:00Z", "test": "2031-01-01T00:00:00Z"}}), "EmptySplit")
    assert "split 'validation' would be empty" in msg
    assert storage.list(f"s3://loom/{ns}/datasets/") == []


FETCH_PEAK = """
import json, sys, tracemalloc
from loom.backends.storage import Storage
from loom.workloads import ingest
storage = Storage.from_env()
tracemalloc.start()
digest, size = ingest.fetch(storage, sys.argv[1], sys.argv[2])
print(json.dumps({"digest": digest, "bytes": size, "peak": tracemalloc.get_traced_memory()[1]}))
"""


def test_fetch_hashes_in_constant_memory(s3, storage, ns, tmp_path):
    """S3 objects and URLs are copied and hashed in one streamed pass: the peak of Python
    allocations is the same for 8 MiB and 32 MiB, and far below the object's size.
    Measured in a child process: the embedded S3 server lives in this one."""
    import hashlib
    import os
    import subprocess
    import sys

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    peaks: dict[tuple[str, int], int] = {}
    try:
        for mib in (8, 32):
            data = os.urandom(mib * 1024 * 1024)
            expected = "sha256:" + hashlib.sha256(data).hexdigest()
            uri = f"s3://loom/{ns}/big{mib}.bin"
            storage.put_bytes(uri, data)
            (tmp_path / f"big{mib}.bin").write_bytes(data)
            del data
            for kind, source in (("s3", uri), ("http", f"http://127.0.0.1:{server.server_address[1]}/big{mib}.bin")):
                out = subprocess.run([sys.executable, "-c", FETCH_PEAK, source, str(tmp_path / "copy.bin")],
                                     env={**os.environ, **s3.env()}, capture_output=True, text=True, timeout=120)
                assert out.returncode == 0, out.stderr
                got = json.loads(out.stdout)
                assert (got["digest"], got["bytes"]) == (expected, mib * 1024 * 1024)
                peaks[(kind, mib)] = got["peak"]
    finally:
        server.shutdown()
    for kind in ("s3", "http"):
        assert peaks[(kind, 32)] < 8 * 1024 * 1024, peaks
        assert peaks[(kind, 32)] < peaks[(kind, 8)] + 1024 * 1024, f"memory grows with the object: {peaks}"
