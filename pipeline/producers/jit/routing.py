"""The audio routing matrix of a JIT session. Pure: no I/O, no numpy.

A :class:`ChannelMatrix` lists, for each output channel, the source channels added into it and
their gains: ``output[o] = sum(gain * source[channel] for channel, gain in routes[o])``. Source
channels are the session-wide indices of :mod:`pipeline.producers.jit.channels` (every audio
input's channels, flattened in input order). Any source may feed any output, several outputs,
or none; an output with no routes is silent.

The model counts output channels rather than assuming two, but the session's output is stereo
(``L``, ``R``): aiortc (1.16) sends Opus as stereo only (its encoder sets ``layout="stereo"``,
resamples every frame to stereo and offers ``opus/48000/2``), and the multichannel Opus browsers
know (Chrome's non-standard ``multiopus``) is not something aiortc can negotiate or encode. A
5.1 output (:data:`OUTPUT_NAMES` ``[6]``) needs a sender that can, and the mixer already mixes
to any number of outputs.

Ways to make a matrix, each a pure function of the session's :class:`ChannelLayout`:

- :func:`check_routes`: explicit routes (the ``route-channels/1`` command), validated;
- :func:`selection_matrix`: the ``channels/1`` rule (one channel: every output; as many as the
  outputs: one each; more: a fold-down, position ``i`` to output ``i % outputs``, averaged);
- :func:`pair_matrix`: the first two channels of one input to L and R (a mono input: both);
- :func:`downmix_matrix`: the ITU-R BS.775 5.1 → stereo downmix of one input, whose channels
  must be named (FFmpeg's names: FL FR FC LFE BL/SL BR/SR).

Errors are :class:`~pipeline.producers.jit.errors.CommandError` with a one-line reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.producers.jit.channels import MAX_SELECTED, ChannelLayout
from pipeline.producers.jit.errors import CommandError

Route = tuple[int, float]
"""``(source channel, gain)``."""
Routes = tuple[tuple[Route, ...], ...]
"""The routes of each output channel, in output order."""
Preset = Literal["pair", "downmix"]

OUTPUT_NAMES: dict[int, tuple[str, ...]] = {
    2: ("L", "R"),
    6: ("L", "R", "C", "LFE", "Ls", "Rs"),
}
"""Names of the output channels of each output layout the model knows (only stereo is sent)."""
OUTPUTS = 2
"""Output channels of a session: stereo (see the module docstring)."""
MAX_SOURCES = MAX_SELECTED
"""Most distinct source channels one matrix may use."""
MAX_GAIN = 4.0
"""Largest gain (+12 dB): enough to lift a quiet stem, not enough to hide a wrong route.
The mix is clipped to full scale."""
ITU_CENTRE = ITU_SURROUND = 1 / math.sqrt(2)
"""ITU-R BS.775 downmix gains (-3 dB) of the centre and surround channels; LFE is dropped."""


@dataclass(frozen=True)
class ChannelMatrix:
    """Source channels and gains of each output channel (see the module docstring)."""

    routes: Routes

    @property
    def outputs(self) -> int:
        """Output channels."""
        return len(self.routes)

    @property
    def sources(self) -> tuple[int, ...]:
        """The distinct source channels used, in order."""
        return tuple(sorted({channel for routes in self.routes for channel, _ in routes}))

    def gains(self, total: int) -> tuple[tuple[float, ...], ...]:
        """The dense matrix: one row per output, one column per source channel (``total``)."""
        rows = []
        for routes in self.routes:
            row = [0.0] * total
            for channel, gain in routes:
                row[channel] += gain
            rows.append(tuple(row))
        return tuple(rows)


def _output_name(output: int, outputs: int) -> str:
    names = OUTPUT_NAMES.get(outputs)
    return names[output] if names else f"output {output}"


def check_routes(
    routes: Sequence[Sequence[tuple[int, float]]], layout: ChannelLayout, outputs: int = OUTPUTS
) -> ChannelMatrix:
    """``routes`` (one list of ``(source channel, gain)`` per output channel) as a matrix, or
    CommandError naming what is wrong with them."""
    if layout.total == 0:
        raise CommandError("the session has no audio inputs: there is no channel to route")
    if len(routes) != outputs:
        names = ", ".join(OUTPUT_NAMES.get(outputs, ()))
        raise CommandError(
            f"{len(routes)} output channels routed: the output has {outputs}"
            + (f" ({names})" if names else "")
        )
    used: set[int] = set()
    checked: list[tuple[Route, ...]] = []
    for output, items in enumerate(routes):
        name = _output_name(output, outputs)
        seen: set[int] = set()
        for channel, gain in items:
            if isinstance(channel, bool) or not 0 <= channel < layout.total:
                raise CommandError(
                    f"{name}: channel {channel} does not exist: the audio inputs have "
                    f"{layout.total} channels (0-{layout.total - 1})"
                )
            if channel in seen:
                raise CommandError(f"{name}: channel {channel} is routed twice: give it once")
            if not (math.isfinite(gain) and 0.0 <= gain <= MAX_GAIN):
                raise CommandError(
                    f"{name}: channel {channel} has gain {gain}: use 0 to {MAX_GAIN}"
                )
            seen.add(channel)
        used |= seen
        checked.append(tuple((int(channel), float(gain)) for channel, gain in items))
    if len(used) > MAX_SOURCES:
        raise CommandError(f"{len(used)} source channels routed: at most {MAX_SOURCES}")
    return ChannelMatrix(tuple(checked))


def selection_matrix(selection: Sequence[int], outputs: int = OUTPUTS) -> ChannelMatrix:
    """The matrix of a ``channels/1`` selection (already checked): one channel to every output,
    as many as the outputs one to each, more folded down (position ``i`` to output
    ``i % outputs``, the channels of an output averaged, so the fold cannot clip)."""
    if len(selection) == 1:
        return ChannelMatrix(tuple(((selection[0], 1.0),) for _ in range(outputs)))
    rows = []
    for output in range(outputs):
        mine = selection[output::outputs]
        rows.append(tuple((channel, 1.0 / len(mine)) for channel in mine))
    return ChannelMatrix(tuple(rows))


def _channels_of(layout: ChannelLayout, input_number: int) -> range:
    """Session-wide indices of the channels of session input ``input_number``."""
    numbers = layout.input_numbers
    if input_number not in numbers:
        have = ", ".join(str(n) for n in numbers) or "none"
        raise CommandError(
            f"input {input_number} is not an audio input: the audio inputs are {have}"
        )
    index = numbers.index(input_number)
    start = sum(layout.counts[:index])
    return range(start, start + layout.counts[index])


def pair_matrix(layout: ChannelLayout, input_number: int) -> ChannelMatrix:
    """The first two channels of session input ``input_number`` to L and R (a mono input to
    both)."""
    channels = _channels_of(layout, input_number)
    return selection_matrix(channels[:2], 2)


def downmix_matrix(layout: ChannelLayout, input_number: int) -> ChannelMatrix:
    """ITU-R BS.775 5.1 → stereo of session input ``input_number``:
    ``L = FL + 0.707 FC + 0.707 Ls``, ``R = FR + 0.707 FC + 0.707 Rs``, LFE dropped (the
    surrounds are ``BL``/``BR`` or ``SL``/``SR``). CommandError when the input's channels are
    not named so."""
    channels = _channels_of(layout, input_number)
    names = layout.names_of(input_number)
    # A name may be unknown (""), and a layout built without names has none.
    where = {name: channel for channel, name in zip(channels, names, strict=False) if name}

    def find(*wanted: str) -> int:
        for name in wanted:
            if name in where:
                return where[name]
        raise CommandError(
            f"input {input_number} has no {'/'.join(wanted)} channel for a 5.1 downmix: "
            f"its channels are {' '.join(names) or 'unnamed'}"
        )

    fl, fr, fc = find("FL"), find("FR"), find("FC")
    ls, rs = find("BL", "SL"), find("BR", "SR")
    return ChannelMatrix(
        (
            ((fl, 1.0), (fc, ITU_CENTRE), (ls, ITU_SURROUND)),
            ((fr, 1.0), (fc, ITU_CENTRE), (rs, ITU_SURROUND)),
        )
    )


def preset_matrix(preset: Preset, layout: ChannelLayout, input_number: int) -> ChannelMatrix:
    """The matrix a named preset makes of session input ``input_number``."""
    if layout.total == 0:
        raise CommandError("the session has no audio inputs: there is no channel to route")
    if preset == "pair":
        return pair_matrix(layout, input_number)
    return downmix_matrix(layout, input_number)
