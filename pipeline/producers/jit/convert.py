"""Decoded frames to the session's output pictures: scaled, BT.709, yuv420p, as numpy arrays.

The decisions (size, source matrix, tone mapping) are made once, from the first decoded frame
and the options (:mod:`pipeline.producers.jit.picture`); :meth:`PictureConverter.convert` then
runs per frame in the decode thread. swscale converts the matrix and range and scales in one
pass; tone mapping goes through float RGB (:mod:`pipeline.producers.jit.tonemap`).

A picture is kept as a ``(height * 3 / 2, width)`` uint8 array (the Y plane, then U, then V,
without line padding): cheap to cache, and each viewer's track makes its own
:class:`av.VideoFrame` from it, so no two encoders ever share (and mutate) one frame.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from pipeline.messages.events import SessionOptions
from pipeline.producers.jit import picture
from pipeline.producers.jit.tonemap import tone_map

Yuv = npt.NDArray[np.uint8]


class PictureConverter:
    """Turns frames of one stream into output pictures. Use from one thread."""

    def __init__(
        self,
        first: av.VideoFrame,
        options: SessionOptions,
        stream_sar: Fraction | None,
        max_output: tuple[int, int] | None = None,
    ) -> None:
        """``max_output``: the box a picture is scaled down into when the options give no
        width or height."""
        self.sar = picture.sample_aspect(
            options.sample_aspect_num, options.sample_aspect_den, stream_sar
        )
        self.width, self.height = picture.output_size(
            first.width, first.height, self.sar, options.width, options.height, max_output
        )
        self.matrix = picture.source_matrix(options.colorspace, first.colorspace, first.height)
        self.curve = picture.transfer(options.bt2100_tone_mapping, first.color_trc)

    def convert(self, frame: av.VideoFrame) -> Yuv:
        """``frame`` as a yuv420p BT.709 limited-range picture of the output size."""
        src_range = picture.source_range(frame.color_range, frame.format.name)
        if self.curve is None:
            out = frame.reformat(
                width=self.width,
                height=self.height,
                format="yuv420p",
                src_colorspace=self.matrix,
                dst_colorspace=picture.SWS_BT709,
                src_color_range=src_range,
                dst_color_range=picture.RANGE_MPEG,
            )
        else:
            rgb = frame.reformat(
                width=self.width,
                height=self.height,
                format="gbrpf32le",
                src_colorspace=self.matrix,
                src_color_range=src_range,
            ).to_ndarray()
            linear = np.asarray(rgb, dtype=np.float32)
            sdr = av.VideoFrame.from_ndarray(tone_map(linear, self.curve), format="rgb24")
            out = sdr.reformat(
                format="yuv420p",
                dst_colorspace=picture.SWS_BT709,
                dst_color_range=picture.RANGE_MPEG,
            )
        return np.asarray(out.to_ndarray(), dtype=np.uint8)


def to_frame(data: Yuv) -> av.VideoFrame:
    """A new yuv420p :class:`av.VideoFrame` (tagged BT.709, limited range) from a picture."""
    frame = av.VideoFrame.from_ndarray(data, format="yuv420p")
    frame.colorspace = 1  # AVCOL_SPC_BT709
    frame.color_range = picture.RANGE_MPEG
    return frame
