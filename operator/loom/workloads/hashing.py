"""Streaming sha256 in constant memory.

One fixed buffer is reused for every read (``readinto``), so hashing a file of
any size holds ``chunk_size`` bytes at most; hashlib releases the GIL and runs
OpenSSL's sha256, which is what makes it as fast as ``sha256sum``.
Sources are copied to a local file and hashed in the same pass (one read of the
network stream), so the parser reads a file whose digest is the one recorded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ..lineage.digest import format_digest

CHUNK = 1024 * 1024


def sha256_reader(stream: BinaryIO, chunk_size: int = CHUNK) -> tuple[str, int]:
    """(``sha256:<hex>``, bytes) of a binary stream, through one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    total = 0
    readinto = getattr(stream, "readinto", None)
    if readinto is None:  # a plain read() stream
        while chunk := stream.read(chunk_size):
            h.update(chunk)
            total += len(chunk)
        return format_digest(h.hexdigest()), total
    while n := readinto(buf):
        h.update(view[:n])
        total += n
    return format_digest(h.hexdigest()), total


def sha256_path(path: str | Path, chunk_size: int = CHUNK) -> tuple[str, int]:
    """(digest, bytes) of a local file, in constant memory."""
    with open(path, "rb", buffering=0) as f:
        return sha256_reader(f, chunk_size)


def copy_hashing(chunks: Iterable[bytes], dest: str | Path) -> tuple[str, int]:
    """Write a stream of chunks to ``dest`` while hashing it: (digest, bytes).

    Memory is one chunk at a time, whatever the object's size.
    """
    h = hashlib.sha256()
    total = 0
    with open(dest, "wb") as out:
        for chunk in chunks:
            h.update(chunk)
            out.write(chunk)
            total += len(chunk)
    return format_digest(h.hexdigest()), total


def http_chunks(url: str, chunk_size: int = CHUNK, timeout: float = 60.0) -> Iterator[bytes]:
    """The body of an HTTP(S) GET, streamed in chunks; a clear error on a bad status."""
    import requests

    from .dataerrors import DataError

    try:
        with requests.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code == 404:
                raise DataError("SourceNotFound", f"source not found: {url} (HTTP 404)")
            if resp.status_code >= 400:
                raise DataError("SourceUnreadable", f"cannot read {url}: HTTP {resp.status_code} {resp.reason}")
            yield from resp.iter_content(chunk_size)
    except requests.RequestException as exc:
        raise DataError("SourceUnreadable", f"cannot read {url}: {type(exc).__name__}: {exc}") from exc
