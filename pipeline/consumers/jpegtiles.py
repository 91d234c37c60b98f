"""JPEG tile frames decoded where they are composed: only the frames a picture shows, each
once, in the render thread.

Frames that crossed machines come as JPEG (:mod:`pipeline.frames.tilecodec`). The intake keeps
the newest frame of each source as it came, encoded (its JPEG header checked), so a frame
replaced before any picture showed it is never decoded; at each picture the
:class:`~pipeline.consumers.render.MosaicRenderer` passes its views through
:meth:`JpegTiles.decoded`, in its executor thread, which decodes each live JPEG frame the first
time a picture shows it and hands the compositor views of the raw planes. A source's decoded
frame is kept until its next one: the tiles that show the same source, and the pictures that
draw it again (an alarm border, a meter that came), use the same planes.

A frame that does not decode is counted (:attr:`JpegTiles.bad`) and logged (a warning once
per source and reason); its tile keeps the last picture its source gave (under that picture's
serial, so the compositor does not even draw it again), or shows "waiting" while there is none.
The bad frame is not tried again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from pipeline.consumers.compositor import TileKind, TileView
from pipeline.frames.tilecodec import Packed, TileCodecError, TileDecoder
from pipeline.messages.frames import FrameHeader

log = logging.getLogger("tessera.stitcher")


class DropLog:
    """Says why tile frames are dropped: a warning once per source and reason (a grabber that
    sends one bad frame sends one every frame), the repeats at debug."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._reasons: dict[str, str] = {}

    def say(self, key: str, reason: str) -> None:
        """Log one drop of ``key``'s frame (a source id or subject) for ``reason``."""
        level = logging.DEBUG if self._reasons.get(key) == reason else logging.WARNING
        self._reasons[key] = reason
        log.log(level, "%s: %s", self._message, reason, extra={"source": key})


@dataclass(frozen=True)
class _Decoded:
    """A source's last decoded frame: the serial it had, its header (now ``raw``), its
    planes."""

    serial: int
    header: FrameHeader
    pixels: Packed


class JpegTiles:
    """The decoded frames of a mosaic's JPEG sources; one per renderer, used only in its
    thread. ``close()`` releases the decoder (safe twice)."""

    def __init__(self) -> None:
        self._decoder: TileDecoder | None = None
        self._last: dict[str, _Decoded] = {}
        self._failed: dict[str, int] = {}
        """Source id -> serial of its newest frame if that one did not decode."""
        self._drops = DropLog("JPEG tile frame not decoded")
        self.decoded_frames = 0
        """JPEG frames decoded so far."""
        self.bad = 0
        """JPEG frames that did not decode (each counted once)."""

    def decoded(self, views: Sequence[TileView]) -> Sequence[TileView]:
        """``views`` with every live JPEG frame replaced by its planes (decoded now if no
        picture showed that frame yet); ``views`` itself when none is JPEG."""
        if not any(_is_jpeg(view) for view in views):
            return views
        return [self._decode(view) if _is_jpeg(view) else view for view in views]

    def _decode(self, view: TileView) -> TileView:
        header = view.header
        assert header is not None and view.pixels is not None
        sid = header.source_id
        last = self._last.get(sid)
        if last is None or last.serial != view.serial:
            if self._failed.get(sid) == view.serial:
                return self._instead(view, last)
            try:
                if self._decoder is None:
                    self._decoder = TileDecoder()
                pixels = self._decoder.decode(view.pixels, header.width, header.height)
            except TileCodecError as exc:
                self._refused(sid, view.serial, str(exc))
                return self._instead(view, last)
            self.decoded_frames += 1
            last = _Decoded(view.serial, msgspec.structs.replace(header, encoding="raw"), pixels)
            self._last[sid] = last
            self._failed.pop(sid, None)
        return dataclasses.replace(view, header=last.header, pixels=last.pixels.data)

    def _instead(self, view: TileView, last: _Decoded | None) -> TileView:
        """What a tile whose newest frame did not decode shows: its source's last picture,
        else "waiting" (with the view's overlays either way)."""
        if last is None:
            return dataclasses.replace(view, kind=TileKind.WAITING, serial=0, header=None,
                                       pixels=None)  # fmt: skip
        return dataclasses.replace(
            view, serial=last.serial, header=last.header, pixels=last.pixels.data
        )

    def _refused(self, sid: str, serial: int, reason: str) -> None:
        self.bad += 1
        self._failed[sid] = serial
        self._drops.say(sid, reason)

    def close(self) -> None:
        """Release the decoder and the frames held. Safe twice."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._last.clear()


def _is_jpeg(view: TileView) -> bool:
    return (
        view.kind is TileKind.LIVE
        and view.header is not None
        and view.pixels is not None
        and view.header.encoding == "jpeg"
    )
