"""Tessera's error tree. Every error a user can see is one of these, with a one-line message
that names the bad thing and, where it can, the fix.

- ``TesseraError``: the root; the CLI prints ``str(error)`` and exits 1 (2 for usage errors).
  - ``ConfigError``: a setting has a bad value (names the env var or flag and the value).
  - ``NatsServerError``: the embedded nats-server could not be found, started or stopped.
  - ``NatsUnavailableError``: no NATS to connect to (names the URL and how to start one).
  - ``TopologyError``: an existing stream or bucket conflicts with the one Tessera declares.
  - ``ProjectionError``: a projection could not be rebuilt or is in use.
  - ``MessageError``: a message could not be decoded (names the subject); ``TileCodecError``
    (:mod:`pipeline.frames.tilecodec`): a tile frame's JPEG that is not a 4:2:0 picture of its
    tile or does not decode.
  - ``InstanceError``: an instance could not be launched, found, readied or terminated
    (:mod:`pipeline.instances.base` has its kinds); ``WorkerPending``: a worker waits for an
    instance that is starting (nothing failed).
  - ``SigningError`` (:mod:`pipeline.access.signing`): a play secret, TTL, viewer name or path
    that cannot be signed; ``TokenError`` (:mod:`pipeline.access.tokens`): a token name, scope
    list or rate that cannot be used.
  - ``LevelsError`` (:mod:`pipeline.producers.levels`): an audio frame the meter cannot take,
    or an FFmpeg filter graph that failed; ``AlarmSyntaxError``
    (:mod:`pipeline.monitoring.alarms`): an ``alarms=`` value, with the position of the error.
  - ``MasterPlaylistError`` (:mod:`pipeline.sources.renditions`): an HLS master playlist that
    cannot be read or offers no decodable rendition (the opener turns it into a source error).

Third-party exceptions are translated where they are caught, with ``raise X(...) from exc``.
"""

from __future__ import annotations


class TesseraError(Exception):
    """Base of every error Tessera reports to a user."""


class ConfigError(TesseraError):
    """A setting has a value Tessera cannot use."""


class NatsServerError(TesseraError):
    """The embedded nats-server could not be found, started or stopped."""


class NatsUnavailableError(TesseraError):
    """There is no NATS server to connect to."""


class TopologyError(TesseraError):
    """An existing JetStream stream or bucket conflicts with Tessera's declaration."""


class ProjectionError(TesseraError):
    """A projection could not be applied or rebuilt."""


class MessageError(TesseraError):
    """A message on the bus could not be decoded."""


class InstanceError(TesseraError):
    """An instance could not be launched, found, readied or terminated."""


class WorkerPending(InstanceError):
    """The worker cannot start yet: it waits for an instance that is starting. Try it again on
    a later pass; nothing failed (the controller counts no failure and records no start)."""
