"""Object storage for Loom (MinIO or any S3), over the minio client.

Connection from env (see docs/internals.md): LOOM_S3_ENDPOINT (URL; https means
TLS), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, LOOM_S3_BUCKET (default
``loom``), LOOM_S3_REGION (default ``us-east-1``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from minio import Minio
from minio.error import S3Error

DEFAULT_BUCKET = "loom"
DEFAULT_REGION = "us-east-1"
CHUNK = 1024 * 1024
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}


class StorageError(Exception):
    """A storage operation failed; the message names the URI."""


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``. The key may be empty or a prefix."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StorageError(f"not an s3:// URI: {uri!r}")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"no bucket in URI: {uri!r}")
    return bucket, key


def make_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    key: str
    size: int
    etag: str | None = None


class Storage:
    """Thin, explicit wrapper over :class:`minio.Minio` addressed by ``s3://`` URIs."""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str = DEFAULT_BUCKET,
        region: str = DEFAULT_REGION,
    ) -> None:
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(f"bad S3 endpoint URL: {endpoint!r}")
        self.endpoint = endpoint
        self.bucket = bucket or DEFAULT_BUCKET
        self.region = region or DEFAULT_REGION
        self.client = Minio(
            parsed.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parsed.scheme == "https",
            region=self.region,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Storage":
        env = os.environ if env is None else env
        endpoint = env.get("LOOM_S3_ENDPOINT")
        if not endpoint:
            raise StorageError("LOOM_S3_ENDPOINT is not set")
        return cls(
            endpoint,
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            bucket=env.get("LOOM_S3_BUCKET") or DEFAULT_BUCKET,
            region=env.get("LOOM_S3_REGION") or DEFAULT_REGION,
        )

    # -- helpers ---------------------------------------------------------
    def uri(self, key: str, bucket: str | None = None) -> str:
        return make_uri(bucket or self.bucket, key.lstrip("/"))

    def _wrap(self, uri: str, exc: Exception, action: str) -> StorageError:
        if isinstance(exc, S3Error) and exc.code in _MISSING_CODES:
            return StorageError(f"object not found: {uri}")
        if isinstance(exc, S3Error):
            return StorageError(f"cannot {action} {uri}: {exc.code}: {exc.message}")
        return StorageError(f"cannot {action} {uri}: {type(exc).__name__}: {exc}")

    # -- buckets ---------------------------------------------------------
    def ensure_bucket(self, bucket: str | None = None) -> None:
        bucket = bucket or self.bucket
        try:
            if not self.client.bucket_exists(bucket):
                self.client.make_bucket(bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._wrap(f"s3://{bucket}", exc, "create bucket") from exc
        except Exception as exc:  # connection errors
            raise self._wrap(f"s3://{bucket}", exc, "create bucket") from exc

    # -- objects ---------------------------------------------------------
    def put_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        bucket, key = parse_uri(uri)
        try:
            self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        except Exception as exc:
            raise self._wrap(uri, exc, "write") from exc
        return uri

    def get_bytes(self, uri: str) -> bytes:
        return b"".join(self.iter_chunks(uri))

    def put_json(self, uri: str, obj: Any) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")
        return self.put_bytes(uri, data, content_type="application/json")

    def get_json(self, uri: str) -> Any:
        data = self.get_bytes(uri)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"not valid JSON: {uri}: {exc}") from exc

    def put_file(self, uri: str, path: str | Path, content_type: str = "application/octet-stream") -> str:
        """Upload a local file, streamed (multipart for large files)."""
        bucket, key = parse_uri(uri)
        try:
            self.client.fput_object(bucket, key, str(path), content_type=content_type)
        except Exception as exc:
            raise self._wrap(uri, exc, "write") from exc
        return uri

    def get_file(self, uri: str, path: str | Path) -> Path:
        """Download an object to a local file, streamed (minio writes a .part file, then renames)."""
        bucket, key = parse_uri(uri)
        try:
            self.client.fget_object(bucket, key, str(path))
        except Exception as exc:
            raise self._wrap(uri, exc, "read") from exc
        return Path(path)

    def iter_chunks(self, uri: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        bucket, key = parse_uri(uri)
        resp = None
        try:
            resp = self.client.get_object(bucket, key)
            yield from resp.stream(chunk_size)
        except StorageError:
            raise
        except Exception as exc:
            raise self._wrap(uri, exc, "read") from exc
        finally:
            if resp is not None:
                resp.close()
                resp.release_conn()

    def sha256(self, uri: str) -> str:
        """Streaming sha256 of an object, ``sha256:<hex>`` (constant memory)."""
        h = hashlib.sha256()
        for chunk in self.iter_chunks(uri):
            h.update(chunk)
        return "sha256:" + h.hexdigest()

    def stat(self, uri: str) -> ObjectInfo:
        bucket, key = parse_uri(uri)
        try:
            st = self.client.stat_object(bucket, key)
        except Exception as exc:
            raise self._wrap(uri, exc, "stat") from exc
        return ObjectInfo(uri=uri, key=key, size=st.size or 0, etag=st.etag)

    def exists(self, uri: str) -> bool:
        bucket, key = parse_uri(uri)
        try:
            self.client.stat_object(bucket, key)
            return True
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return False
            raise self._wrap(uri, exc, "stat") from exc
        except Exception as exc:
            raise self._wrap(uri, exc, "stat") from exc

    def list(self, prefix_uri: str, recursive: bool = True) -> list[ObjectInfo]:
        """Objects under an ``s3://bucket/prefix`` URI, sorted by key (no directories)."""
        bucket, prefix = parse_uri(prefix_uri)
        try:
            objs = [
                ObjectInfo(uri=make_uri(bucket, o.object_name), key=o.object_name, size=o.size or 0, etag=o.etag)
                for o in self.client.list_objects(bucket, prefix=prefix or None, recursive=recursive)
                if not o.is_dir
            ]
        except Exception as exc:
            raise self._wrap(prefix_uri, exc, "list") from exc
        return sorted(objs, key=lambda o: o.key)

    def delete(self, uri: str) -> None:
        bucket, key = parse_uri(uri)
        try:
            self.client.remove_object(bucket, key)
        except Exception as exc:
            raise self._wrap(uri, exc, "delete") from exc
