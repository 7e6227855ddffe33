import pytest

from loom.backends.storage import Storage, StorageError, parse_uri
from loom.lineage.digest import manifest_digest, sha256_bytes


def test_parse_uri():
    assert parse_uri("s3://b/k/x.csv") == ("b", "k/x.csv")
    assert parse_uri("s3://b/prefix/") == ("b", "prefix/")
    with pytest.raises(StorageError):
        parse_uri("http://b/k")


def test_roundtrip_and_listing(storage, ns, tmp_path):
    base = f"s3://loom/{ns}"
    storage.put_json(f"{base}/a.json", {"x": 1})
    assert storage.get_json(f"{base}/a.json") == {"x": 1}
    big = bytes(range(256)) * 20000  # 5 MB: several streaming chunks
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    storage.put_file(f"{base}/sub/big.bin", src)
    out = storage.get_file(f"{base}/sub/big.bin", tmp_path / "out" / "big.bin")
    assert out.read_bytes() == big
    assert storage.sha256(f"{base}/sub/big.bin") == sha256_bytes(big)
    assert [o.key for o in storage.list(f"{base}/")] == [f"{ns}/a.json", f"{ns}/sub/big.bin"]
    assert storage.exists(f"{base}/a.json") and not storage.exists(f"{base}/nope")


def test_missing_object_names_uri(storage, ns):
    uri = f"s3://loom/{ns}/missing.csv"
    for call in (storage.get_bytes, storage.sha256, storage.get_json):
        with pytest.raises(StorageError, match=f"not found: {uri}"):
            call(uri)


def test_from_env(s3):
    st = Storage.from_env(s3.env())
    assert st.bucket == "loom" and st.endpoint == s3.endpoint
    with pytest.raises(StorageError, match="LOOM_S3_ENDPOINT"):
        Storage.from_env({})


def test_manifest_digest_is_canonical():
    assert manifest_digest({"a": 1, "b": [1, 2]}) == manifest_digest({"b": [1, 2], "a": 1})
    assert manifest_digest({"a": 1}) != manifest_digest({"a": 2})
    assert manifest_digest({}).startswith("sha256:") and len(manifest_digest({})) == 71
