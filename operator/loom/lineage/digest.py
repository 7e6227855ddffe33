"""Content digests: streaming sha256 and canonical-JSON manifest digests.

Every digest Loom writes has the form ``sha256:<64 hex>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import IO, Any, Iterable

CHUNK = 1024 * 1024
PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def format_digest(hexdigest: str) -> str:
    return PREFIX + hexdigest


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and bool(_DIGEST_RE.match(value))


def hex_of(digest: str) -> str:
    """``sha256:abc...`` -> ``abc...`` (raises ValueError on a malformed digest)."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest[len(PREFIX):]


def sha256_bytes(data: bytes) -> str:
    return format_digest(hashlib.sha256(data).hexdigest())


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return format_digest(h.hexdigest())


def sha256_stream(stream: IO[bytes], chunk_size: int = CHUNK) -> str:
    """Digest of a binary stream read in fixed-size chunks (constant memory)."""
    h = hashlib.sha256()
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        h.update(chunk)
    return format_digest(h.hexdigest())


def sha256_file(path: str | Path, chunk_size: int = CHUNK) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f, chunk_size)


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def manifest_digest(manifest: Any) -> str:
    """Digest of a JSON-serialisable manifest, independent of key order."""
    return sha256_bytes(canonical_json(manifest))
