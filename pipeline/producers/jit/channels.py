"""Audio channel routing of a JIT session. Pure: no I/O, no numpy.

The channels of every audio input are flattened in input order into one list: with a 2-channel
and a 6-channel input, channels 0-1 are the first file's and 2-7 the second's. A *selection* is
a tuple of indices into that list; it goes to the session's one stereo output:

- 1 channel: the same signal left and right (a mono channel is heard in both ears);
- 2 channels: the first left, the second right;
- more: a plain fold-down, the even positions of the selection averaged to the left and the odd
  ones to the right (so a 5.1 selection is audible, at a level that cannot clip; it is not an
  ITU downmix, which needs to know which channel is which);
- none (no audio inputs): silence.

That rule is one way of making a routing matrix (``routing.selection_matrix``, which the player
uses); :mod:`pipeline.producers.jit.routing` makes any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.producers.jit.errors import CommandError, JitOptionsError

MAX_SELECTED = 16
"""Most channels one selection may route (the widest common layouts have 16)."""

Matrix = tuple[tuple[float, ...], tuple[float, ...]]
"""Gains of every input channel into the left (row 0) and right (row 1) outputs."""


@dataclass(frozen=True)
class ChannelLayout:
    """How many channels each audio input has, in input order; optionally their session input
    numbers (default 2, 3, ...: input 1 is the video) and their channels' names (FFmpeg's:
    ``FL``, ``FR``, ``FC``, ``LFE``, ...; default none known)."""

    counts: tuple[int, ...]
    inputs: tuple[int, ...] = ()
    names: tuple[tuple[str, ...], ...] = ()

    @property
    def input_numbers(self) -> tuple[int, ...]:
        """The session input number of each audio input."""
        return self.inputs or tuple(range(2, 2 + len(self.counts)))

    def names_of(self, input_number: int) -> tuple[str, ...]:
        """The channel names of session input ``input_number`` (empty when not known)."""
        index = self.input_numbers.index(input_number)
        return self.names[index] if index < len(self.names) else ()

    @property
    def channel_inputs(self) -> tuple[int, ...]:
        """The session input number of every session-wide channel."""
        return tuple(
            n for n, c in zip(self.input_numbers, self.counts, strict=True) for _ in range(c)
        )

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The name of every session-wide channel (``""`` when not known)."""
        out: list[str] = []
        for index, count in enumerate(self.counts):
            names = self.names[index] if index < len(self.names) else ()
            out.extend(names[c] if c < len(names) else "" for c in range(count))
        return tuple(out)

    @property
    def total(self) -> int:
        """All audio channels of the session."""
        return sum(self.counts)

    def locate(self, channel: int) -> tuple[int, int]:
        """``(audio input index, channel within it)`` of a session-wide channel index."""
        if not 0 <= channel < self.total:
            raise IndexError(channel)
        for index, count in enumerate(self.counts):
            if channel < count:
                return index, channel
            channel -= count
        raise AssertionError("unreachable")

    def default_selection(self, channels: int | None = None, cho: int = 0) -> tuple[int, ...]:
        """The selection a session starts with: ``channels`` (default 2) channels from
        ``cho``, fewer when the inputs have fewer. JitOptionsError when ``cho`` or
        ``channels`` cannot be honoured."""
        wanted = 2 if channels is None else channels
        if not 1 <= wanted <= MAX_SELECTED:
            raise JitOptionsError(f"channels={wanted}: use 1 to {MAX_SELECTED} channels")
        if cho < 0:
            raise JitOptionsError(f"cho={cho} is negative: channels are numbered from 0")
        if self.total == 0:
            return ()
        if cho >= self.total:
            raise JitOptionsError(
                f"cho={cho} is past the last audio channel: the audio inputs have "
                f"{self.total} channels (0-{self.total - 1})"
            )
        return tuple(range(cho, min(cho + wanted, self.total)))

    def check(self, selection: Sequence[int]) -> tuple[int, ...]:
        """``selection`` as a tuple, or CommandError naming what is wrong with it."""
        if self.total == 0:
            raise CommandError("the session has no audio inputs: there is no channel to select")
        if not selection:
            raise CommandError("select at least one channel")
        if len(selection) > MAX_SELECTED:
            raise CommandError(f"{len(selection)} channels selected: at most {MAX_SELECTED}")
        for channel in selection:
            if not 0 <= channel < self.total:
                raise CommandError(
                    f"channel {channel} does not exist: the audio inputs have {self.total} "
                    f"channels (0-{self.total - 1})"
                )
        return tuple(selection)


def stereo_matrix(selection: Sequence[int], total: int) -> Matrix:
    """The gains that route ``selection`` (indices below ``total``) to a stereo pair."""
    left = [0.0] * total
    right = [0.0] * total
    if len(selection) == 1:
        left[selection[0]] = right[selection[0]] = 1.0
    elif selection:
        to_left = selection[0::2]
        to_right = selection[1::2]
        for channel in to_left:
            left[channel] += 1.0 / len(to_left)
        for channel in to_right:
            right[channel] += 1.0 / len(to_right)
    return tuple(left), tuple(right)
