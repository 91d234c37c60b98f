"""The JIT worker's errors: every one a :class:`~pipeline.errors.TesseraError` with a one-line
message that names the bad value and, where it can, the fix.

- :class:`JitError`: the root of this package's errors.
  - :class:`JitInputError`: an input of the session cannot be used (refused, missing,
    unreachable, no video or audio stream, undecodable). ``str()`` is the one-line cause the
    worker appends as ``SessionFailed``: ``"input 2: no audio stream"``. Retrying does not help
    until the input (or the policy, or the media roots) changes.
  - :class:`JitOptionsError`: the session's options cannot be honoured (an unknown colorspace,
    a picture larger than the limit, ``cho`` past the last audio channel). Also appended as
    ``SessionFailed``, with the cause ``"options: ..."``.
  - :class:`CommandError`: a playback command cannot be applied (a frame past the end, a rate
    of 0, a channel that does not exist). The session goes on; the message becomes the
    ``error`` of the :class:`~pipeline.messages.control.CommandReply`.
  - :class:`SignalError`: a viewer's offer cannot be answered (not SDP, no video to receive,
    too many viewers). The message becomes the ``error`` of the
    :class:`~pipeline.messages.control.SignalAnswer`.
  - :class:`ReadError`: decoding failed in the middle of a session (a network input dropped,
    corrupt data past the probe). The session goes on paused; the worker logs it.

This module is pure: no asyncio, NATS or PyAV.
"""

from __future__ import annotations

from pipeline.errors import TesseraError


class JitError(TesseraError):
    """Base of the JIT worker's errors."""


class JitInputError(JitError):
    """Input ``index`` (1-based, as the user listed them) cannot be used, for ``reason``."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"input {index}: {reason}")


class JitOptionsError(JitError):
    """The session options cannot be honoured; ``str()`` starts with ``options:``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"options: {reason}")


class CommandError(JitError):
    """A playback command was refused; the session is unchanged."""


class SignalError(JitError):
    """An SDP offer could not be answered."""


class ReadError(JitError):
    """An input could not be read past its probe."""
