"""The source time code of a video file: the label its first frame has, as the file records it.

Where FFmpeg's demuxers put it (a metadata entry ``timecode``, text such as ``01:00:00:00``, or
``00:59:59;28`` for drop-frame):

- **MOV/MP4**: the ``tmcd`` track is a data stream with the entry, and FFmpeg copies it to the
  video stream that references the track (its ``tref``), so both have it;
- **MXF**: the material package's time code component is the container's entry (a source
  package's, where the file has one, is its stream's);
- **Matroska**: a ``TIMECODE`` tag of the segment or the track (FFmpeg keeps tag names as
  written; its own lookups ignore case, and so does this module's);
- elsewhere (an MPEG-2 GOP header, DV) FFmpeg may put it on the stream or the container too.

:func:`read_start_timecode` looks in that order (the video stream, the container, data streams)
and returns the first entry that is a valid label at the rate frames are labelled at (checked
by :class:`~pipeline.producers.jit.timecode.Timecodes`). An entry that is not (a ``;`` at 25
fps, a garbled text) is skipped with a log line: a file's odd metadata must not stop a review.

It reads PyAV objects: call it from the thread that owns the container.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from fractions import Fraction

import av.container
import av.video

from pipeline.producers.jit.timecode import Timecodes

log = logging.getLogger("tessera.jit")

TIMECODE_KEY = "timecode"
"""The metadata entry FFmpeg's demuxers fill with a start time code (any case)."""


def _entry(metadata: Mapping[str, str]) -> str | None:
    for key, value in metadata.items():
        if key.lower() == TIMECODE_KEY and value.strip():
            return value
    return None


def _candidates(
    container: av.container.InputContainer, stream: av.video.VideoStream
) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every time code entry, in the order they are trusted."""
    if text := _entry(stream.metadata):
        yield f"video stream {stream.index}", text
    if text := _entry(container.metadata):
        yield "the container", text
    for data in container.streams.data:
        if text := _entry(data.metadata):
            yield f"data stream {data.index}", text


def read_start_timecode(
    container: av.container.InputContainer,
    stream: av.video.VideoStream,
    rate: Fraction,
    *,
    index: int = 1,
) -> str | None:
    """The start time code of ``stream`` in ``container`` at ``rate``, or None when the file
    records none that is valid (``index``: the input's number, for the log)."""
    for where, text in _candidates(container, stream):
        text = text.strip()
        try:
            Timecodes(rate, text)
        except ValueError as exc:
            log.warning("input %d: ignoring the time code %r of %s: %s", index, text, where, exc)
            continue
        return text
    return None
