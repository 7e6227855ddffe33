"""Data errors: a WorkloadError that carries a machine-readable reason.

The ingest result then reads ``{"error": "<message>", "reason": "SchemaViolation"}``
and the Dataset's Failed condition takes that reason.
"""
from __future__ import annotations

from ._task import WorkloadError


class DataError(WorkloadError):
    """Bad data found at ingest; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
