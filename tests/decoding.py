"""A grabber's decode thread for tests: on a loopback URL, with quick timeouts and backoff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.messages.frames import FrameHeader
from pipeline.producers.decode import DecodeThread
from pipeline.producers.release import Pixels
from pipeline.sources.policy import SourcePolicy


def decode_thread(
    url: str,
    source_id: str,
    emit: Callable[[FrameHeader, Pixels], None],
    *,
    width: int = 320,
    height: int = 180,
    fps: float = 25.0,
    timeout: float = 5.0,
    **extra: Any,
) -> DecodeThread:
    """A decode thread (not started) of ``url`` for one tile; ``extra``: ``levels``, ``also``,
    ... as :class:`~pipeline.producers.decode.DecodeThread` takes them."""
    return DecodeThread(
        source_id=source_id,
        url=url,
        width=width,
        height=height,
        fps=fps,
        policy=SourcePolicy.local(),
        open_timeout=timeout,
        read_timeout=timeout,
        backoff_initial=0.1,
        backoff_max=0.5,
        healthy_after=1.0,
        emit=emit,
        changed=lambda: None,
        ended=lambda: None,
        **extra,
    )
