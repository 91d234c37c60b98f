"""Request/reply control messages.

- ``ctl.agent.<instance_id>``: :class:`StartWorker` / :class:`StopWorker` to an agent, answered
  with :class:`CommandReply` (``code="full"``: the instance has no room for the worker's kind).
- ``ctl.session.<id>``: playback control of a JIT session (the same messages travel over the
  WebRTC data channel), answered with :class:`CommandReply`; the worker reports each sent frame
  with :class:`FrameReport`.
- ``ctl.signal.<id>``: WHEP signalling relayed to the JIT worker: :class:`SignalOffer` answered
  with :class:`SignalAnswer`; :class:`SignalHangup` (a WHEP DELETE) answered with
  :class:`CommandReply`.
- ``ctl.mosaic.<fp>``: the same WHEP signalling relayed to a mosaic's stitcher; an offer past
  its viewer limit is answered with a :class:`SignalAnswer` of ``code="full"``.
- ``ctl.worker.<worker_id>``: :class:`Retile` to a running grabber (the controller's), answered
  with :class:`CommandReply`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.messages.events import CompareMode
from pipeline.messages.workers import WorkerSpec


class StartWorker(msgspec.Struct, frozen=True, kw_only=True, tag="start-worker/2"):
    """Start the worker ``spec`` describes (a no-op if it runs already).

    Version 2 carries the whole spec; version 1 carried its options as ``name=value`` strings.
    """

    spec: WorkerSpec


class StopWorker(msgspec.Struct, frozen=True, kw_only=True, tag="stop-worker/1"):
    """Stop a worker (SIGTERM, then SIGKILL after the grace period)."""

    worker_id: str
    reason: str = "not-needed"


class Play(msgspec.Struct, frozen=True, tag="play/1"):
    """Start or resume playback at the current position."""


class Pause(msgspec.Struct, frozen=True, tag="pause/1"):
    """Stop sending frames; the position stays."""


class Seek(msgspec.Struct, frozen=True, tag="seek/1"):
    """Go to ``frame``: the next frame sent is exactly that frame."""

    frame: int


class SeekTimecode(msgspec.Struct, frozen=True, tag="seek-timecode/1"):
    """Go to the frame labelled ``timecode``: the source time code (the file's start time code
    plus the frame number; from ``00:00:00:00`` when the file records none), read in the
    labels' counting (drop-frame or not) whichever separator it has. A label before the start
    or past the end is refused, naming the labels the video has."""

    timecode: str


class Step(msgspec.Struct, frozen=True, tag="step/1"):
    """Move ``delta`` frames (negative: back) and send that one frame."""

    delta: int = 1


class SetRate(msgspec.Struct, frozen=True, tag="rate/1"):
    """Playback rate (1.0: real time)."""

    rate: float


class SelectChannels(msgspec.Struct, frozen=True, tag="channels/1"):
    """Route these audio channels (0-based across all audio inputs, in order) to the output:
    one to both ears, two to left and right, more folded down (even positions left, odd
    right, averaged)."""

    channels: tuple[int, ...]


Routes = tuple[tuple[tuple[int, float], ...], ...]
"""A routing matrix: for each output channel (L, R), its ``(source channel, gain)`` pairs."""


class RouteChannels(msgspec.Struct, frozen=True, kw_only=True, tag="route-channels/1"):
    """Route audio through a matrix, while playing (a new matrix fades in over 20 ms).

    Either ``routes``: for each output channel (``[L, R]``), the ``[source channel, gain]``
    pairs mixed into it; a source channel is 0-based across all audio inputs, a gain 0 to 4;
    at most 16 distinct source channels; an output with no pairs is silent. Or ``preset`` of
    session input ``input`` (2 is the first audio input): ``"pair"``, its first two channels
    to L and R (a mono input to both); ``"downmix"``, the ITU-R BS.775 5.1 to stereo downmix
    (L = FL + 0.707 FC + 0.707 BL/SL, R = FR + 0.707 FC + 0.707 BR/SR, LFE dropped), refused
    when the input's channels are not named so.
    """

    routes: Routes = ()
    preset: Literal["", "pair", "downmix"] = ""
    input: int = 0


CompareShow = Literal["both", "A", "B"]
"""What an A/B compare session shows: both videos composed by the mode, or one of them."""


class CompareState(msgspec.Struct, frozen=True, kw_only=True):
    """How an A/B compare session composes its picture (see
    :mod:`pipeline.producers.jit.compare`)."""

    mode: CompareMode = "side-by-side"
    split: float = 0.5
    """Where the wipe's edge is, 0 (left edge) to 1 (right edge) of the picture: A left of it,
    B right of it."""
    offset: int = 0
    """Frames B is ahead of A: B's frame n + offset goes with A's frame n (at the same frame
    rate; see ``compare.frame_of_b``)."""
    show: CompareShow = "both"


class Compare(msgspec.Struct, frozen=True, kw_only=True, tag="compare/1"):
    """Change an A/B compare session's picture, while playing: each field given replaces its
    value in :class:`CompareState` (None keeps it). Refused by a session of one video, and for
    a ``split`` outside 0-1 or an ``offset`` beyond ``events.MAX_COMPARE_OFFSET`` frames."""

    mode: CompareMode | None = None
    split: float | None = None
    offset: int | None = None
    show: CompareShow | None = None


SessionCommand = (
    Play | Pause | Seek | SeekTimecode | Step | SetRate | SelectChannels | RouteChannels | Compare
)
AgentCommand = StartWorker | StopWorker


class Retile(msgspec.Struct, frozen=True, kw_only=True, tag="retile/1"):
    """Make these tile sizes at this fps from now on, in the running grabber of the same
    source (``spec``'s key and URL): what changes when a mosaic that shows the source at
    another size starts or stops being watched, without a new process or, where the source
    allows, a new connection."""

    spec: WorkerSpec


ReplyCode = Literal["", "full", "unavailable"]
"""Why a command or an offer was refused, for the asker to act on: ``full``: the one asked is
at its capacity: an agent's instance for the worker's kind (place the worker on another
instance), a mosaic's stitcher for WebRTC viewers (retry later, or play HLS); ``""``: any
other refusal (the error says which), or none. A new code is a new tag version: an older
reader refuses a code it does not know."""


class CommandReply(msgspec.Struct, frozen=True, kw_only=True, tag="reply/1"):
    """The answer to a command: ``ok``, or a one-line ``error`` and its ``code``."""

    ok: bool
    error: str = ""
    code: ReplyCode = ""
    position: int | None = None
    routes: Routes | None = None
    """The routing matrix in force after a ``channels/1`` or ``route-channels/1`` command
    (refused or not); None for other commands."""
    compare: CompareState | None = None
    """An A/B compare session's settings in force after a ``compare/1`` command (refused or
    not); None for other commands and sessions of one video."""


class FrameReport(msgspec.Struct, frozen=True, kw_only=True, tag="frame-report/1"):
    """Sent by a JIT worker for each video frame: its number and SMPTE timecode."""

    frame: int
    """Counted from 0, the video's first frame."""
    timecode: str
    """The source time code: the file's start time code (``JitStats.start_timecode``) plus
    ``frame``; counted from ``00:00:00:00`` when the file records none."""
    pts: float
    playing: bool
    rtp: int | None = None
    """The picture's timestamp on the 90 kHz video clock, modulo 2**32: its RTP timestamp at
    every viewer less the random origin that viewer's RTP sender adds (constant per viewer:
    a viewer learns it from one picture it shows, then knows each picture's frame from its
    RTP timestamp). Added with a default: None from a worker that does not say."""
    frame_b: int | None = None
    """In an A/B compare, the frame of B in the picture beside ``frame``; None when the
    picture shows no frame of B (one video, ``show: "A"``, or B has no such frame: its side
    is black)."""
    exact: bool = True
    """False for a seek proxy's picture of ``frame`` (a quick JPEG of the frame at a reduced
    size, sent while its exact picture is decoded from a keyframe); that exact picture follows
    with a report of its own, unless a command comes first. Added with a default."""


class SignalOffer(msgspec.Struct, frozen=True, kw_only=True, tag="offer/1"):
    """A WHEP offer relayed over NATS."""

    sdp: str


class SignalAnswer(msgspec.Struct, frozen=True, kw_only=True, tag="answer/1"):
    """The worker's SDP answer, or a one-line error and its code (``full``: no room for
    another viewer now; added with a default, so answers without it still decode)."""

    sdp: str = ""
    error: str = ""
    code: ReplyCode = ""


class SignalHangup(msgspec.Struct, frozen=True, kw_only=True, tag="hangup/1"):
    """A WHEP DELETE relayed over NATS: close one viewer's peer connection.

    ``peer_id`` names the viewer: :func:`pipeline.webrtc.sdp.peer_id_of` of the answer
    the worker gave it (the first 32 hex digits of the answer's DTLS SHA-256 fingerprint,
    unique per peer connection). Answered with :class:`CommandReply` (``ok=False`` with an
    error when no such viewer is connected).
    """

    peer_id: str


SignalRequest = SignalOffer | SignalHangup
"""What ``ctl.signal.<id>`` and ``ctl.mosaic.<fp>`` carry."""
