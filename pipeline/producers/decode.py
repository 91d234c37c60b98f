"""A grabber's decode thread: open the source, demux, decode, keep and pace, scale, hand each
frame on; reconnect, forever, until told to stop.

The :class:`DecodeThread` (``grabber-<source_id>``) owns the PyAV container, the decoder and
the scaler. It opens the URL (:func:`~pipeline.sources.opener.open_input`: policy, allow-lists,
timeouts), demuxes, decodes, drops frames over the fps cap *before* scaling and paces by
timestamps (:class:`~pipeline.producers.timing.FramePacer`), scales into each of its tile
sizes (a :class:`~pipeline.producers.scale.TileScaler` each: the first, the largest, from the
decoded picture, the others from the first one's picture where it has the pixels they need)
and hands the frame on through the grabber's ``emit``, once per size: at once, or for a paced
source through the :class:`~pipeline.producers.release.Releaser`, which hands it on when it is
due. The rendition of a master playlist and the ``lowres`` factor are chosen for the box that
holds every size, so one decode serves them all. It never
touches the event loop itself: the grabber's callbacks do (``loop.call_soon_threadsafe``).

Audio: when the source has an audio stream, its first is demuxed and decoded beside the video
(a decoder of its own, one thread) and every decoded frame, whatever the fps cap, goes to the
connection's :class:`~pipeline.producers.levels.AudioMeter` (a new one per connection) and, as
s16 samples (:mod:`pipeline.producers.pcm`), to ``audio`` (the mosaic's listeners). A paced
source's audio packets are decoded in runs, when the thread is ahead of its frames and about to
wait (:data:`AUDIO_BATCH`: warm caches make that a third cheaper). Each reading and each chunk
goes out at once for a source that is not paced, and for a paced one when it is due, on the
clock of the video frames it came with (held here, and handed on by whichever thread gets there
first: the release thread after each frame, or this one after each audio run). Audio never
costs the video anything but its CPU: an audio packet that does not decode, or a meter that
gives up (:class:`~pipeline.producers.levels.LevelsError`, logged once), is counted in
``audio_errors`` and never counts toward :data:`MAX_DECODE_ERRORS` or a reconnect; after
:data:`MAX_DECODE_ERRORS` audio errors in a row, or a meter error, the connection stops
decoding audio and the video carries on.

Failures (open refused or failed, read timeout, end of a live stream, persistent decode errors)
never end the thread: it logs the one-line reason once per change of state, waits with
exponential backoff and jitter (reset after ``healthy_after`` seconds of good frames) and
reconnects, forever. A finite source (a file, an ended VOD playlist) is played again from the
start when it ends, and counted in ``loops``.

Pacing: RTSP and RTMP arrive at their own pace and are handed on as they come. Everything
fetched over HTTP is paced by its timestamps against the wall clock: a file would otherwise be
read as fast as the CPU allows, and live HLS hands over a whole segment at once, which a
stitcher showing the newest frame would turn into one picture per segment. A source is finite
when FFmpeg knows its duration (an MP4, an ended playlist); an MPEG-TS file from a server
without range requests has no known duration, so its end counts as a live stream's end
(reconnect with backoff) rather than a loop.

Stopping: FFmpeg must not have its container closed from another thread, so :meth:`stop` sets
a flag that the thread checks between packets, and every blocking FFmpeg call is bounded by
PyAV's interrupt callback (``open_timeout`` for the open, ``read_timeout`` for each read).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import av
import av.container
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

from pipeline.messages.frames import FrameHeader
from pipeline.producers.levels import AudioMeter, LevelsError, Reading
from pipeline.producers.pcm import Pcm, to_s16
from pipeline.producers.release import AHEAD, Pixels, Releaser
from pipeline.producers.scale import TileScaler, lowres_factor
from pipeline.producers.timing import (
    Backoff,
    Carry,
    FramePacer,
    NonrefSkip,
    StaleGuard,
    Verdict,
    loop_delay,
)
from pipeline.sources.opener import MAX_PIXELS, describe, open_input, rendition_for
from pipeline.sources.policy import SourceError, SourcePolicy, SourceRefused, redact
from pipeline.sources.renditions import Variant

log = logging.getLogger("tessera.grabber")

MAX_DECODE_ERRORS = 25
"""Decode errors in a row (about 1 s of a 25 fps source) after which the grabber reconnects:
one corrupt packet is not worth a new connection, a broken stream is."""

MAX_LEVELS_HELD = 2.0
"""Seconds ahead of now a paced source's audio reading may be held for its time; one due later
(a jump in the timestamps) is handed on at once, like a frame that re-anchors the clock."""

AUDIO_BATCH = 48
"""Audio packets of a paced source (about a second of AAC) that wait at most before they are
decoded and metered. They are decoded when the thread is ahead and about to wait for its frames
to go out (every half second or so), all in one run: audio decode and metering then cost about
two thirds of what they cost a packet at a time between video frames, whose decoding leaves
the CPU's caches cold (measured with a 720p source: 3.2 against 4.6 ms of thread CPU a second).
Their readings and chunks are still handed on at their time."""

LevelsSink = Callable[[Reading, int, float], None]
"""``levels(reading, seq, wall)``: hands one audio reading on (decode or release thread)."""
AudioSink = Callable[[Pcm, int], None]
"""``audio(chunk, seq)``: hands one chunk of decoded samples on (decode or release thread)."""


class PictureSink(Protocol):
    """Where a decode thread has its tiles measured (the grabber's alarms)."""

    def measure(self, t: float, wall: float, pixels: Pixels, width: int, height: int) -> None:
        """Measure the first size's tile of the frame at source time ``t``, to be shown at
        ``wall`` (now, or later for a paced source); called in the decode thread right after
        the frame was scaled. The measure may wait for :meth:`settle`."""

    def settle(self) -> None:
        """Finish the measures that wait (the decode thread has time now, or must not wait)."""

    def unshown(self, wall: float) -> None:
        """The frames measured for after ``wall`` will not be handed on (a lost connection)."""


LIVE_SCHEMES = frozenset({"rtsp", "rtmp", "rtmps"})
"""Sources that arrive at their own pace and never end: not paced, never looped."""

# Decoder settings, measured on a 1280x720 H.264 source (4 Mbit/s, testsrc2 with noise) scaled
# to 320x180, one thread (ms of CPU per frame, best of 3):
#   default decode 2.54 ms; skip_loop_filter=all 1.71 ms (-33 %); flags2=+fast 2.52 ms (no
#   gain, not used); both 1.73 ms.
# Skipping the deblocking filter differs from a full decode by 60 dB PSNR at tile size (54.5 dB
# at full size): invisible in a tile. skip_frame=NONREF would drop B-frames we may want and
# saves nothing on cameras (no B-frames), so it is not used. One decoder thread: a host runs
# many grabbers, and frame threads would add a frame of latency each.
DECODER_OPTIONS = {"skip_loop_filter": "all", "max_pixels": str(MAX_PIXELS)}


class GrabberState(enum.Enum):
    """Where a grabber is in its life."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    """Backing off after a failure, before the next connection attempt."""


class _End(enum.Enum):
    STOPPED = "stopped"
    FILE_END = "file end"
    FAILED = "failed"
    RETILED = "retiled"
    """Given tiles that need the source opened again (another variant, fps or lowres)."""


@dataclass
class _Result:
    """How one connection ended."""

    end: _End
    reason: str = ""
    refused: bool = False
    frames: int = 0
    healthy_for: float = 0.0
    lasted: float = 0.0


class DecodeThread:
    """Decodes one source into tile frames in a thread of its own; see the module docstring.

    ``emit(header, pixels)`` hands a frame on at one tile size (called from this thread or the
    release thread, once per size, the first size first; ``header.source_id`` says which; the
    pixels are only valid during the call), ``changed()`` says that :attr:`connected` or
    :attr:`last_error` changed, ``ended()`` that the thread's work is over: all three are
    called off the event loop. The counters are written by the thread and read by the loop.
    """

    def __init__(
        self,
        *,
        source_id: str,
        url: str,
        width: int,
        height: int,
        fps: float,
        policy: SourcePolicy,
        open_timeout: float,
        read_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        healthy_after: float,
        emit: Callable[[FrameHeader, Pixels], None],
        changed: Callable[[], None],
        ended: Callable[[], None],
        levels: LevelsSink | None = None,
        audio: AudioSink | None = None,
        pictures: PictureSink | None = None,
        also: Sequence[tuple[str, int, int]] = (),
    ) -> None:
        """``source_id``, ``width``, ``height``: the first tile size (give the largest first);
        ``also``: further ``(source_id, width, height)`` sizes of the same frames;
        ``pictures``: measures each frame kept (at the first size)."""
        self.source_id = source_id
        self.url = url
        self.fps = fps
        self.policy = policy
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.healthy_after = healthy_after
        self._emit = emit
        self._changed = changed
        self._ended = ended
        self._levels = levels
        self._audio_out = audio
        self._pictures = pictures
        self._scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        self._tiles: tuple[tuple[str, TileScaler], ...] = ()
        self._scaler: TileScaler
        self.box = (0, 0)
        """The smallest box holding every tile size: what the rendition and ``lowres`` fit."""
        self._use(_scalers(((source_id, width, height), *also)))
        self._retile: tuple[tuple[tuple[str, TileScaler], ...], float] | None = None
        """Tiles and fps to make from the next frame on (:meth:`retile`; under the lock)."""
        self._retile_lock = threading.Lock()
        self._variants: list[Variant] = []
        """The variants of the master playlist the current connection chose from ([]: the
        source is no master)."""
        self._coded = ("", 0, 0)
        """The current connection's codec and coded size (what ``lowres`` was fitted to)."""
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._stale = StaleGuard()
        self._audio_stale = StaleGuard()
        self._held: deque[tuple[float, Callable[[], None]]] = deque()
        """A paced source's audio readings and chunks waiting for their time: (due, hand on)."""
        self._held_lock = threading.Lock()
        self._levels_error = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._release: Releaser | None = None
        self._connection: _Connection | None = None
        """The connection being decoded (the release's idle hook flushes its audio)."""
        self._carry: Carry | None = None
        self.state = GrabberState.STOPPED
        self.decoded = 0
        self.handed = 0
        """Frames handed on (numbers them; the release thread may hold a second of them before
        they are emitted)."""
        self.reconnects = 0
        self.reopens = 0
        """Times the source was opened again for new tiles (:meth:`retile`): not failures."""
        self.decode_errors = 0
        self.loops = 0
        self.stale = 0
        """Frames of a live source dropped as repeats after a reconnect (a frozen playlist)."""
        self.has_audio = False
        """The current (or last) connection has an audio stream."""
        self.audio_readings = 0
        """Audio readings handed on (they number them)."""
        self.audio_chunks = 0
        """Chunks of decoded samples handed on (they number them)."""
        self.audio_wanted = False
        """Whether someone plays the decoded audio now: chunks are made and handed on only
        then (set by the grabber from the loop; a plain flag is enough: one late chunk more or
        less does not matter)."""
        self.audio_errors = 0
        """Audio packets that did not decode, and meters that gave up."""
        self.lowres = 0
        """Halvings of the picture size the decoder decodes at (FFmpeg's ``lowres``)."""
        self.reduced = ""
        """How the current connection's decode is cut to the tile: ``lowres 1/4``,
        ``non-ref skipped``, both, or ""."""
        self.rendition = ""
        """The variant of an HLS master playlist that the current (or last) connection chose
        for the tile, e.g. ``1280x720 2.5 Mbit/s avc1.64001f``; "" when the source is not a
        master (:func:`~pipeline.sources.opener.open_input`, ``fit``)."""
        self.last_error = ""
        self.connected = False
        self.busy_since: float | None = None
        """When the thread's current step began (None: waiting on purpose); the grabber's
        watchdog reads it."""

    @property
    def frame_size(self) -> int:
        """Bytes of one packed tile of the largest size."""
        return max(scaler.frame_size for _, scaler in self._tiles)

    @property
    def tiles(self) -> tuple[tuple[str, int, int], ...]:
        """``(source_id, width, height)`` of each tile size made now, the first first."""
        return tuple((sid, scaler.width, scaler.height) for sid, scaler in self._tiles)

    def retile(self, tiles: Sequence[tuple[str, int, int]], fps: float) -> None:
        """Make these ``(source_id, width, height)`` tile sizes (the largest first) at ``fps``
        instead, from the next decoded frame on (called from any thread; ``ValueError`` for a
        size no tile can have). The connection goes on when it can: a new fps, or a box that
        needs another variant of a master playlist or another ``lowres``, reopens the source
        at once (no backoff); any other change only changes the scalers."""
        made = _scalers(tiles)
        if not fps > 0:
            raise ValueError(f"fps must be greater than 0, not {fps}")
        with self._retile_lock:
            self._retile = (made, fps)

    def _use(self, tiles: tuple[tuple[str, TileScaler], ...]) -> None:
        self._tiles = tiles
        self._scaler = tiles[0][1]
        self.box = (max(s.width for _, s in tiles), max(s.height for _, s in tiles))

    def _retiled(self, *, opening: bool = False) -> bool:
        """Take the tiles :meth:`retile` was given (decode thread, between frames); True when
        the connection must be opened again for them. ``opening``: the connection is opened
        but nothing is decoded yet, so only a master's variant chosen for the old box counts
        (the decoder, the cap and the pacer are set up after this)."""
        with self._retile_lock:
            pending, self._retile = self._retile, None
        if pending is None:
            return False
        tiles, fps = pending
        before, rate = self.box, self.fps
        self._use(tiles)
        self.fps = fps
        log.info(
            "tile sizes changed",
            extra={
                "source": self.source_id,
                "sizes": [f"{w}x{h}" for _, w, h in self.tiles],
                "fps": fps,
            },
        )
        if self.box != before and self._variants:
            if rendition_for(self._variants, self.box) != self.rendition:
                return True
        if opening:
            return False
        if fps != rate:
            return True  # the pacer's cap and the non-reference skip are the connection's
        codec, width, height = self._coded
        return self.box != before and lowres_factor(codec, width, height, *self.box) != self.lowres

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (again, after :meth:`stop` and :meth:`join`)."""
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"grabber-{self.source_id}", daemon=True
        )
        self.state = GrabberState.CONNECTING
        self._thread.start()

    def stop(self) -> None:
        """Tell the thread, and the release thread, to stop (they see it within a timeout)."""
        self._stopping.set()

    def join(self) -> None:
        """Wait for the thread and the release thread to end (after :meth:`stop`)."""
        if self._thread is not None:
            self._thread.join()
        if self._release is not None:
            self._release.join()  # it sees the same stop flag
            self._release = None

    def stopped(self) -> None:
        """The grabber stopped: say so in the state (from the loop, once the thread ended or
        was given up on)."""
        self.state = GrabberState.STOPPED
        self.connected = False

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._work()
        finally:
            self._ended()

    def _work(self) -> None:
        first = True
        while not self._stopping.is_set():
            if not first:
                self.reconnects += 1
            first = False
            self.state = GrabberState.CONNECTING
            self.busy_since = time.monotonic()
            result = self._attempt()
            while result.end is _End.FILE_END and result.frames and not self._stopping.is_set():
                # A finite source ended: play it again at once, but never reopen it more than
                # once per MIN_LOOP_PERIOD (a file of one frame would otherwise be hammered).
                self.loops += 1
                self.busy_since = None
                if self._stopping.wait(loop_delay(result.lasted)):
                    return
                self.busy_since = time.monotonic()
                result = self._attempt(looping=True)
            if self._stopping.is_set() or result.end is _End.STOPPED:
                return
            if result.end is _End.RETILED:
                self.reopens += 1
                first = True  # opened again on purpose: not a reconnect, no backoff
                continue
            if result.end is _End.FILE_END:
                result.reason = f"{redact(self.url)}: no video frames"
            delay = self._backoff.after(
                healthy=result.healthy_for >= self.healthy_after, refused=result.refused
            )
            self.state = GrabberState.WAITING
            self._set_failed(result.reason)
            log.debug(
                "reconnecting later",
                extra={"source": self.source_id, "in_s": round(delay, 2), "why": result.reason},
            )
            self.busy_since = None
            if self._stopping.wait(delay):
                return

    def _attempt(self, *, looping: bool = False) -> _Result:
        """One connection, whatever goes wrong in it."""
        try:
            return self._connect_once(looping=looping)
        except Exception as exc:  # noqa: BLE001 - a surprise (a bug, an odd stream): say it, retry
            log.exception("grabber failed unexpectedly", extra={"source": self.source_id})
            return _Result(_End.FAILED, f"{redact(self.url)}: internal error: {exc!r}")

    def _set_connected(self) -> None:
        self.state = GrabberState.CONNECTED
        if not self.connected:
            self.connected = True
            log.info("source connected", extra={"source": self.source_id})
            self._changed()

    def _set_failed(self, reason: str) -> None:
        changed = self.connected or reason != self.last_error
        self.connected = False
        if changed:
            log.warning("source failed: %s", reason, extra={"source": self.source_id})
            self.last_error = reason
            self._changed()
        else:
            log.debug("source still failing: %s", reason, extra={"source": self.source_id})

    def _connect_once(self, *, looping: bool = False) -> _Result:
        try:
            container = open_input(
                self.url,
                self.policy,
                open_timeout=self.open_timeout,
                read_timeout=self.read_timeout,
                cancelled=self._stopping.is_set,
                fit=self.box,
                chosen=self._chose,
                offered=self._offered,
            )
        except SourceRefused as exc:
            return _Result(_End.FAILED, str(exc), refused=True)
        except SourceError as exc:
            return _Result(_End.FAILED, str(exc))
        with container:
            result = self._pump(container, looping=looping)
        if result.end is not _End.FILE_END:
            if self._release is not None:
                self._release.drain()  # a lost connection's early frames: not shown late
                if self._pictures is not None:
                    self._pictures.unshown(time.time())
            with self._held_lock:
                self._held.clear()  # and its audio readings
        return result

    def _chose(self, rendition: str) -> None:
        self.rendition = rendition
        self._variants = []

    def _offered(self, variants: list[Variant]) -> None:
        self._variants = variants

    def _pump(self, container: av.container.InputContainer, *, looping: bool) -> _Result:
        stream = container.streams.video[0]
        ctx = stream.codec_context  # its size was checked by open_input
        ctx.thread_count = 1
        options = dict(DECODER_OPTIONS)
        self._coded = (ctx.name, ctx.width, ctx.height)
        if self._retile is not None and self._retiled(opening=True):
            return _Result(_End.RETILED)  # given other tiles while opening, for another open
        # Decode no more than the tile shows: at a fraction of the size where the codec can
        # (MPEG-2, MJPEG, ...), and without the frames the fps cap would drop anyway where
        # nothing depends on them (a 50 fps source in a 25 fps mosaic).
        lowres = lowres_factor(ctx.name, ctx.width, ctx.height, *self.box)
        if lowres:
            options["lowres"] = str(lowres)
        ctx.options = options
        # The bitstream's own frame rate first: the container's guess counts fields (an MPEG-2
        # stream at 25 frames a second guesses 50), and its average needs probing we skip.
        rate = ctx.framerate or stream.average_rate or stream.guessed_rate
        nonref = NonrefSkip(float(rate) if rate else 0.0, self.fps)
        if nonref.active:
            ctx.skip_frame = "NONREF"
        self.lowres = lowres
        self.reduced = _reduced(lowres, nonref.active)
        live = self._scheme in LIVE_SCHEMES
        finite = not live and bool(container.duration and container.duration > 0)
        # The first audio stream, if any (and if anyone takes the readings).
        audio = container.streams.audio[0] if container.streams.audio else None
        actx: AudioCodecContext | None = None
        if audio is not None and (self._levels is not None or self._audio_out is not None):
            actx = audio.codec_context
            actx.thread_count = 1  # as the video: many grabbers per host
        self.has_audio = actx is not None
        # A file that loops keeps its pacing: the next pass starts one frame after the last.
        carried, self._carry = self._carry, None
        connection = _Connection(
            self,
            ctx,
            FramePacer(
                self.fps,
                opened=time.monotonic(),
                pace=not live,
                stale=None if finite else self._stale,
                carried=carried if looping else None,
            ),
            actx,
            None if finite else self._audio_stale,
            nonref,
        )
        self._connection = connection
        streams: list[Any] = [stream]
        audio_index = -1
        if actx is not None and audio is not None:
            streams.append(audio)
            audio_index = audio.index
        # A generator: closed below, before the container, whichever way the loop ends.
        packets = cast("Generator[av.Packet[Any], None, None]", container.demux(streams))
        try:
            errors_in_row = 0
            for packet in packets:
                self.busy_since = time.monotonic()
                if self._stopping.is_set():
                    return connection.result(_End.STOPPED)
                if packet.stream_index == audio_index:
                    connection.queue_audio(packet)
                    continue
                try:
                    frames = ctx.decode(packet)
                except av.FFmpegError as exc:
                    self.decode_errors += 1
                    errors_in_row += 1
                    if errors_in_row >= MAX_DECODE_ERRORS:
                        reason = f"{errors_in_row} decode errors in a row ({describe(exc)})"
                        return connection.result(_End.FAILED, f"{redact(self.url)}: {reason}")
                    continue
                errors_in_row = 0
                for frame in frames:
                    if self._retile is not None and self._retiled():
                        log.info(
                            "reopening the source for its new tile sizes",
                            extra={"source": self.source_id, "box": self.box, "fps": self.fps},
                        )
                        return connection.result(_End.RETILED)
                    if not connection.handle(frame):
                        return connection.result(_End.STOPPED)
        except av.FFmpegError as exc:
            reason = describe(exc, timeout=f"no data for {self.read_timeout:g} s")
            return connection.result(_End.FAILED, f"{redact(self.url)}: read: {reason}")
        except SourceError as exc:
            # From our HTTP layer (a refused redirect or playlist entry, a stalled body).
            if self._stopping.is_set():
                return connection.result(_End.STOPPED)
            return connection.result(_End.FAILED, str(exc))
        finally:
            packets.close()
        if finite:
            # The end of the file's sound and pictures, before it plays again.
            connection.flush_audio()
            if self._pictures is not None:
                self._pictures.settle()
            return connection.result(_End.FILE_END)
        # FFmpeg's HLS reader turns "no new segment within the read timeout" (a frozen
        # playlist) into an end of stream too.
        reason = f"the stream ended or stopped advancing for {self.read_timeout:g} s"
        return connection.result(_End.FAILED, f"{redact(self.url)}: {reason}")

    def _releaser(self) -> Releaser:
        """The thread that hands paced frames on at their time (made on first use)."""
        if self._release is None:
            self._release = Releaser(
                self._emit,
                self._stopping,
                [scaler.frame_size for _, scaler in self._tiles],  # grown when tiles grow
                f"release-{self.source_id}",
                idle=self._idle,
                done=self._released,
            )
        return self._release

    def _ahead(self) -> bool:
        """Whether the decode thread is ahead of its frames by more than a few (then work
        that can wait for :meth:`_idle` waits; else it is done at once, on time)."""
        release = self._release
        return release is not None and release.queued >= AHEAD // 4

    def _idle(self) -> None:
        """The decode thread is ahead and about to wait for frames to go out: decode and
        meter the audio it demuxed meanwhile, and finish the pictures' measures, each in one
        run with warm caches."""
        connection = self._connection
        if connection is not None:
            connection.flush_audio()
        if self._pictures is not None:
            self._pictures.settle()

    def _released(self) -> None:
        """A paced frame's tiles went out (release thread): hand on the readings due by now,
        after the frame's last size, whatever sizes it was made in."""
        if self._held:
            self._release_levels(time.monotonic())

    def _scale(self, frame: av.VideoFrame, sar: Fraction | None) -> list[memoryview]:
        """``frame`` in each tile size: the first from the decoded picture, the others from the
        first one's picture when it has the pixels they need (cheaper than from a picture of
        the source's size; bench case 11), else from the decoded picture too."""
        first = self._scaler
        tiles = [first.scale(frame, sar)]
        for _, scaler in self._tiles[1:]:
            tiles.append(scaler.scale(frame, sar, via=first.picture))
        return tiles

    def _hold(self, due: float, hand_on: Callable[[], None]) -> None:
        with self._held_lock:
            self._held.append((due, hand_on))

    def _release_levels(self, now: float) -> None:
        """Hand on the held readings and chunks due by ``now``, in order (decode or release
        thread: under the lock, so that the two never hand them on out of order)."""
        with self._held_lock:
            held = self._held
            while held and held[0][0] <= now:
                _, hand_on = held.popleft()
                hand_on()

    def _audio_failed(self, reason: str) -> None:
        """A connection gave up its audio: say so once per different reason."""
        self.audio_errors += 1
        if reason != self._levels_error:
            log.warning("audio not metered: %s", reason, extra={"source": self.source_id})
            self._levels_error = reason
        else:
            log.debug("audio not metered: %s", reason, extra={"source": self.source_id})


def _scalers(tiles: Iterable[tuple[str, int, int]]) -> tuple[tuple[str, TileScaler], ...]:
    """A scaler for each ``(source_id, width, height)``; ``ValueError`` for a size no tile can
    have, or for none."""
    made = tuple((sid, TileScaler(w, h)) for sid, w, h in tiles)  # validates each size
    if not made:
        raise ValueError("no tile size: give at least one")
    return made


def _reduced(lowres: int, nonref: bool) -> str:
    parts = [f"lowres 1/{1 << lowres}"] if lowres else []
    if nonref:
        parts.append("non-ref skipped")
    return ", ".join(parts)


class _Connection:
    """One connection's frames: decide (the pacer), scale, hand on; and its audio: decode,
    meter, hand the readings on at their time. Runs in the decode thread."""

    def __init__(
        self,
        thread: DecodeThread,
        ctx: VideoCodecContext,
        pacer: FramePacer,
        actx: AudioCodecContext | None = None,
        audio_stale: StaleGuard | None = None,
        nonref: NonrefSkip | None = None,
    ) -> None:
        self.thread = thread
        self.nonref = nonref
        self.ctx = ctx
        self.pacer = pacer
        self.actx = actx
        levels = actx is not None and thread._levels is not None
        self.meter: AudioMeter | None = AudioMeter() if levels else None
        self.audio_next_t = 0.0
        """Source time after the last decoded audio frame (for frames without a timestamp)."""
        self.audio_stale = audio_stale
        self.audio_errors_in_row = 0
        self.audio_packets: list[tuple[av.Packet[Any], tuple[float, float] | None]] = []
        """Audio packets demuxed and not decoded yet, each with the video clock of when it
        came (:attr:`kept`; see :meth:`queue_audio`)."""
        self.kept: tuple[float, float] | None = None
        """(media time, due time) of the last paced frame kept: the clock of the readings."""

    def queue_audio(self, packet: av.Packet[Any]) -> None:
        """Take one audio packet: while a paced source's thread is ahead, they wait to be
        decoded together, when it is about to wait (:meth:`DecodeThread._idle`) or
        :data:`AUDIO_BATCH` have come; otherwise (an unpaced source, a thread that is not
        ahead) at once."""
        packets = self.audio_packets
        packets.append((packet, self.kept))
        if len(packets) >= AUDIO_BATCH or not self.thread._ahead():
            self.flush_audio()

    def flush_audio(self) -> None:
        """Decode and meter the packets waiting, in order."""
        packets = self.audio_packets
        if packets:
            self.audio_packets = []
            for packet, kept in packets:
                self.audio(packet, kept)

    def audio(self, packet: av.Packet[Any], kept: tuple[float, float] | None) -> None:
        """Decode one audio packet and meter its frames; never fails the connection.
        ``kept``: the video clock when the packet came (:attr:`kept` then), which times its
        readings and chunks (a jump in the timestamps since must not)."""
        d = self.thread
        meter, actx = self.meter, self.actx
        if actx is None or (meter is None and d._audio_out is None):
            return  # gave up on this connection's audio
        try:
            frames = actx.decode(packet)
        except av.FFmpegError as exc:
            d.audio_errors += 1
            self.audio_errors_in_row += 1
            if self.audio_errors_in_row >= MAX_DECODE_ERRORS:
                self.meter = None
                d._audio_failed(
                    f"{self.audio_errors_in_row} audio decode errors in a row ({describe(exc)})"
                )
            return
        self.audio_errors_in_row = 0
        for frame in frames:
            start = self.audio_next_t if frame.time is None else float(frame.time)
            if frame.sample_rate:
                self.audio_next_t = start + frame.samples / frame.sample_rate
            if d._audio_out is not None and d.audio_wanted and frame.samples > 0:
                try:
                    self.chunk(to_s16(frame, start), kept)
                except ValueError as exc:
                    d._audio_failed(str(exc))
            if meter is None:
                continue
            try:
                readings = meter.feed(frame)
            except LevelsError as exc:
                self.meter = meter = None
                d._audio_failed(str(exc))
                continue
            for reading in readings:
                self.reading(reading, kept)
        if d._held:
            d._release_levels(time.monotonic())

    def reading(self, reading: Reading, kept: tuple[float, float] | None) -> None:
        """Hand one reading on: at once, or when due for a paced source."""
        d = self.thread
        sink = d._levels
        if sink is None:
            return
        if self.audio_stale is not None and not self.audio_stale.fresh(reading.t):
            return  # a repeat of what was measured before the reconnect
        seq = d.audio_readings
        d.audio_readings += 1
        wall = time.time()
        d._hold(self._due(reading.t, kept), lambda: sink(reading, seq, wall))

    def chunk(self, pcm: Pcm, kept: tuple[float, float] | None) -> None:
        """Hand one chunk of samples on: at once, or when due for a paced source. (A repeat
        after a reconnect is not filtered here: the readings' guard keeps the newest time, and
        a listener drops chunks older than what it played.)"""
        d = self.thread
        sink = d._audio_out
        assert sink is not None
        seq = d.audio_chunks
        d.audio_chunks += 1
        d._hold(self._due(pcm.pts, kept), lambda: sink(pcm, seq))

    def _due(self, t: float, kept: tuple[float, float] | None) -> float:
        """When what was measured at source time ``t`` is due (-inf: at once)."""
        if not self.pacer.pace or kept is None:
            # Not paced, or no frame yet to take the time from: at once (after any held).
            return float("-inf")
        now = time.monotonic()
        due = kept[1] + (t - kept[0])
        return now if due - now > MAX_LEVELS_HELD else due

    def handle(self, frame: av.VideoFrame) -> bool:
        """Process one decoded frame; False when the grabber is stopping."""
        d = self.thread
        d.decoded += 1
        nonref = self.nonref
        if nonref is not None and nonref.active and nonref.decoded(frame.time):
            # What is left when skipping falls short of the cap: decode every frame again.
            self.ctx.skip_frame = "DEFAULT"
            d.reduced = _reduced(d.lowres, False)
            log.info(
                "non-reference frames decoded again: too few frames without them",
                extra={"source": d.source_id},
            )
        wall = time.time()
        verdict = self.pacer.admit(frame.time, time.monotonic())
        if verdict is Verdict.STALE:
            d.stale += 1  # a repeat of what was shown before the reconnect
            return True
        if verdict is Verdict.OVER_CAP:
            return True
        if self.pacer.kept == 1:
            d._set_connected()
        # Scale now, while the decoded picture is still in the CPU's caches, not after the
        # pacing wait (measured: 0.43 ms a frame after the wait; see bench case 1).
        tiles = d._scale(frame, self.ctx.sample_aspect_ratio)
        if self.pacer.pace:
            self.kept = (self.pacer.last_t, self.pacer.due)
        pts = float(self.pacer.last_t)
        if d._pictures is not None:
            # Measured now, while the tile is in this thread's caches; shown at its due time.
            shown = time.time()
            if self.pacer.pace:
                shown += max(0.0, self.pacer.due - time.monotonic())
            d._pictures.measure(pts, shown, tiles[0], d._scaler.width, d._scaler.height)
            if not d._ahead():  # (an unpaced source never is)
                d._pictures.settle()  # shown soon: measured now
        headers = [
            FrameHeader(
                source_id=sid,
                seq=d.handed,
                pts=pts,
                wall=wall,
                width=scaler.width,
                height=scaler.height,
            )
            for sid, scaler in d._tiles
        ]
        d.handed += 1
        if self.pacer.pace:
            d._releaser().put(self.pacer.due, headers, tiles)
            d.busy_since = time.monotonic()  # a wait for a frame's time is on purpose
            return not d._stopping.is_set()
        for header, pixels in zip(headers, tiles, strict=True):
            d._emit(header, pixels)
        return True

    def result(self, end: _End, reason: str = "") -> _Result:
        pacer = self.pacer
        now = time.monotonic()
        healthy = 0.0 if pacer.first_kept is None else now - pacer.first_kept
        if end is _End.FILE_END:
            self.thread._carry = pacer.carry()
        return _Result(
            end, reason, frames=pacer.kept, healthy_for=healthy, lasted=now - pacer.opened
        )
