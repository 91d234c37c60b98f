"""Segment notices on ``segments.<fp>``: a stitcher stored segment ``key`` in object store
``segments`` and then rewrote playlist ``<fp>`` in KV ``manifests``."""

from __future__ import annotations

import msgspec


class SegmentNotice(msgspec.Struct, frozen=True, kw_only=True, tag="segment/1"):
    """One stored media segment of a mosaic."""

    fp: str
    seq: int
    key: str
    duration: float
    size: int
    at: float
    first_wall: float = 0.0
    """Oldest source wall-clock time composed into this segment (glass-to-glass latency)."""
