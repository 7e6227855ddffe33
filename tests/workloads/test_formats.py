"""Source readers (CSV, JSON Lines, Parquet) and the declared-schema check."""
from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loom.workloads import formats, schema
from loom.workloads.dataerrors import DataError
from loom.workloads.hashing import copy_hashing, sha256_path
from loom.workloads.splits import row_hashes


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_three_formats_give_the_same_cells(tmp_path):
    csv = write(tmp_path, "a.csv", b"id,x,ok,when\n1,1.5,true,2024-01-01T00:00:00Z\n2,,false,2024-01-02T00:00:00Z\n")
    jsonl = write(tmp_path, "a.jsonl", b'{"id": 1, "x": 1.5, "ok": true, "when": "2024-01-01T00:00:00Z"}\n\n'
                                       b'{"id": 2, "x": null, "ok": false, "when": "2024-01-02T00:00:00Z"}\n')
    table = pa.table({"id": [1, 2], "x": [1.5, None], "ok": [True, False],
                      "when": pa.array([pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")])})
    pq.write_table(table, tmp_path / "a.parquet")
    frames = [formats.read_frame(p, f, str(p)) for p, f in ((csv, "csv"), (jsonl, "jsonl"), (tmp_path / "a.parquet", "parquet"))]
    for df in frames:
        assert list(df.columns) == ["id", "x", "ok", "when"]
        assert df.to_dict("records") == [{"id": "1", "x": "1.5", "ok": "true", "when": "2024-01-01T00:00:00Z"},
                                         {"id": "2", "x": None, "ok": "false", "when": "2024-01-02T00:00:00Z"}]
    # so a row has the same hash whatever format it came from
    assert list(row_hashes(frames[0])) == list(row_hashes(frames[1])) == list(row_hashes(frames[2]))


def test_jsonl_missing_keys_are_nulls(tmp_path):
    p = write(tmp_path, "b.jsonl", b'{"id": "a", "x": 1}\n{"id": "b", "y": [1, 2]}\n')
    df = formats.read_frame(p, "jsonl", "s3://b/b.jsonl")
    assert list(df.columns) == ["id", "x", "y"]
    assert df.to_dict("records") == [{"id": "a", "x": "1", "y": None}, {"id": "b", "x": None, "y": "[1,2]"}]


@pytest.mark.parametrize("fmt,data,words", [
    ("csv", b"", "the file is empty"),
    ("csv", b"id,a\n1,2\n2,3,4\n", "line 3 has 3 fields, the header has 2"),
    ("csv", b"id,a\n1,2\n2\n", "line 3 has 1 fields"),
    ("csv", b"id,a,a\n1,2,3\n", "duplicate column names ['a']"),
    ("csv", b"id,,b\n1,2,3\n", "empty column name"),
    ("csv", b'id,a\n1,"x\n', "line"),
    ("csv", b"id,a\n1,\xff\xfe\n", "not UTF-8"),
    ("jsonl", b'{"id": 1}\n{"id": 2,\n', "line 2 is not valid JSON"),
    ("jsonl", b'{"id": 1}\n[1, 2]\n', "line 2 is a JSON list, not an object"),
    ("jsonl", b"\n\n", "no records"),
    ("parquet", b"PAR1 this is not parquet", "malformed Parquet"),
    ("parquet", b"id,a\n1,2\n", "malformed Parquet"),
])
def test_malformed_input_is_named(tmp_path, fmt, data, words):
    p = write(tmp_path, f"bad.{fmt}", data)
    with pytest.raises(DataError) as err:
        formats.read_frame(p, fmt, f"s3://b/bad.{fmt}")
    assert err.value.reason == "MalformedInput"
    assert words in str(err.value) and f"s3://b/bad.{fmt}" in str(err.value)


def frame(**cols):
    return pd.DataFrame(cols, dtype=object)


def test_schema_passes_good_data():
    df = frame(id=["1", "2", "3"], n=["1", "-2", None], x=["1.5", "2", "3e2"], ok=["true", "No", "1"],
               t=["2024-01-01T00:00:00Z", "2024-02-01", None], s=["a", "b", "a"])
    schema.check(df, [
        {"column": "n", "type": "integer", "min": -5, "max": 5},
        {"column": "x", "type": "number", "nullable": False, "min": 0},
        {"column": "ok", "type": "boolean"},
        {"column": "t", "type": "timestamp"},
        {"column": "s", "type": "string", "allowedValues": ["a", "b"], "nullable": False},
    ])
    assert schema.column_types(df, [{"column": "s", "type": "string"}])["x"] == "number"


@pytest.mark.parametrize("decl,reason,words", [
    ({"column": "missing"}, "MissingColumn", "declared column 'missing' not found"),
    ({"column": "n", "type": "integer"}, "SchemaViolation", "column 'n': 2 of 4 rows are not of type integer, e.g. '2.5'"),
    ({"column": "x", "type": "number"}, "SchemaViolation", "column 'x': 1 of 4 rows are not of type number, e.g. 'abc'"),
    ({"column": "n", "type": "number", "max": 3}, "SchemaViolation", "column 'n': 1 of 4 rows are above the maximum 3, e.g. '7'"),
    ({"column": "n", "type": "number", "min": 2}, "SchemaViolation", "column 'n': 1 of 4 rows are below the minimum 2, e.g. '1'"),
    ({"column": "s", "nullable": False}, "SchemaViolation", "column 's': 1 of 4 rows are empty but the column is not nullable"),
    ({"column": "s", "allowedValues": ["a", "b"]}, "SchemaViolation", "column 's': 1 of 4 rows are not among the allowed values (a, b), e.g. 'zz'"),
    ({"column": "s", "type": "boolean"}, "SchemaViolation", "not of type boolean, e.g. 'a'"),
    ({"column": "s", "type": "timestamp"}, "SchemaViolation", "not of type timestamp, e.g. 'a'"),
])
def test_schema_violations_name_column_count_and_example(decl, reason, words):
    df = frame(n=["1", "2.5", "7", "2.5"], x=["1", "abc", "2", None], s=["a", "b", "zz", None])
    with pytest.raises(DataError) as err:
        schema.check(df, [decl])
    assert err.value.reason == reason
    assert words in str(err.value), str(err.value)


def test_streaming_hash_matches_hashlib_and_copies(tmp_path):
    import hashlib

    data = bytes(range(256)) * 9000  # 2.3 MB: several chunks
    chunks = [data[i:i + 1000] for i in range(0, len(data), 1000)]
    digest, size = copy_hashing(iter(chunks), tmp_path / "copy")
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest() and size == len(data)
    assert (tmp_path / "copy").read_bytes() == data
    assert sha256_path(tmp_path / "copy", chunk_size=4096) == (digest, size)
    # a stream without readinto
    from loom.workloads.hashing import sha256_reader

    class Plain:
        def __init__(self):
            self.f = io.BytesIO(data)

        def read(self, n):
            return self.f.read(n)

    assert sha256_reader(Plain(), 777) == (digest, size)
