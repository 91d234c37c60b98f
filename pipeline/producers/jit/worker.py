"""The JIT worker: one per session, decoding its files just in time for WebRTC viewers.

Lifecycle: :meth:`JitWorker.start` opens and probes the inputs in the worker's media threads
(``jit-video-<session>`` for the video input, ``jit-audio-<session>`` for the audio ones;
``jit-video-b-<session>`` for B in an A/B compare, whose first two inputs are videos), then
subscribes the session's subjects and reports ``ready``. An input that cannot be used appends
``SessionFailed`` (cause: ``"input 2: no audio stream"``) to ``EVENTS`` and raises
:class:`~pipeline.producers.jit.errors.JitInputError`, with nothing left running.
:meth:`JitWorker.stop` (safe twice) unsubscribes, closes the viewers, stops the player and
closes the inputs in their threads.

Subjects (all request/reply, relayed by the gateway):

- ``ctl.signal.<session>``: :class:`~pipeline.messages.control.SignalOffer` (a WHEP POST) is
  answered with :class:`~pipeline.messages.control.SignalAnswer`; the viewer is then named
  ``peer_id_of(answer)`` (:mod:`pipeline.webrtc.sdp`), and
  :class:`~pipeline.messages.control.SignalHangup` with that id (a WHEP DELETE) closes it,
  answered with :class:`~pipeline.messages.control.CommandReply`. Several viewers may watch
  one session (up to ``max_viewers``); they share its playback (a review with a supervisor
  watching), each with its own peer connection and encoder.
- ``ctl.session.<session>``: playback commands, answered with ``CommandReply``. The same
  commands arrive as JSON text on a viewer's ``control`` data channel and are answered there;
  each frame sent is reported there with a ``FrameReport``.

An A/B compare session (``SessionOptions.compare``) plays A and reads B's frame locked to each
of A's (:mod:`~pipeline.producers.jit.abreader`), so every command acts on both; ``Compare``
(``compare/1``) changes how they are composed while playing.

Frames are numbered from 0 and labelled with the source time code: the start time code the
video file records (:mod:`~pipeline.producers.jit.sourcetc`; reported as
``JitStats.start_timecode``) plus the frame number, from ``00:00:00:00`` when it records none.
``SeekTimecode`` finds a frame by that label.

Heartbeats: ``hb.worker.<worker_id>`` (``WorkerHeartbeat`` with ``JitStats``) every interval;
``hb.viewer.session.<session>`` (``ViewerHeartbeat``) every interval while a viewer is
connected, which is what keeps the session from being reaped as idle.

A viewer that does not connect within ``connect_timeout`` of its answer is dropped, as is one
whose connection fails or closes.

With a ``proxy_root``, a session of one video whose length is known and whose GOPs make seeks
slow (``proxy_min_work``) builds a seek proxy (:mod:`~pipeline.producers.jit.proxy`) in
``<proxy_root>/<session>`` while it is paused, at most ``proxy_bytes``, and removes it when it
stops; its pictures are read in
``jit-proxy-<session>``, and built in ``jit-proxy-build-<session>`` at the lowest priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import av.container
import msgspec
import nats.errors
from aiortc import RTCPeerConnection
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.errors import MessageError, TesseraError
from pipeline.messages.codec import (
    decode_heartbeat,
    decode_session_command,
    decode_signal_request,
    encode,
)
from pipeline.messages.control import (
    CommandReply,
    Compare,
    CompareState,
    Pause,
    Play,
    RouteChannels,
    Routes,
    Seek,
    SeekTimecode,
    SelectChannels,
    SessionCommand,
    SetRate,
    SignalAnswer,
    SignalHangup,
    SignalOffer,
    Step,
)
from pipeline.messages.events import SessionFailed, SessionInput, SessionOptions
from pipeline.messages.heartbeats import JitStats, ViewerHeartbeat, WorkerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.connect import NATS_ERRORS
from pipeline.nats.eventlog import append
from pipeline.nats.heartbeat import Heartbeater
from pipeline.nats.topology import HEARTBEATS, SESSIONS
from pipeline.producers.jit import compare, proxy
from pipeline.producers.jit.abreader import ABReader
from pipeline.producers.jit.audio import AudioInput, AudioReader
from pipeline.producers.jit.channels import ChannelLayout
from pipeline.producers.jit.decoder import VideoReader
from pipeline.producers.jit.errors import CommandError, JitError, JitInputError, JitOptionsError
from pipeline.producers.jit.inputs import InputAccess, open_input
from pipeline.producers.jit.peers import Peer
from pipeline.producers.jit.playback import Playback
from pipeline.producers.jit.player import Player
from pipeline.producers.jit.proxy import BUILD_THREADS, ProxyBuilder, ProxyReader, ProxyStore
from pipeline.producers.jit.routing import ChannelMatrix, check_routes, preset_matrix
from pipeline.producers.jit.sourcetc import read_start_timecode
from pipeline.producers.jit.threads import MediaThread
from pipeline.producers.jit.timecode import Timecodes
from pipeline.runtime.tasks import Tasks, wait_set
from pipeline.sources.policy import SourcePolicy
from pipeline.state.stored import decode_entry
from pipeline.webrtc.ice import ice_configuration
from pipeline.webrtc.sdp import receives

log = logging.getLogger("tessera.jit")

MAX_VIEWERS = 8
"""Viewers one session accepts (each costs an encoder: about a core at 1080p)."""
CONNECT_TIMEOUT = 30.0
"""Seconds a viewer has, after its answer, to connect (ICE and DTLS)."""
STOP_PEER_TIMEOUT = 5.0
PROXY_BYTES = 4 * 1024**3
"""Disk a session's seek proxy may take: about 20 minutes of bench case 12's noisy 1080p file
(the proxy is the output picture up to 1080p's pixels, JPEG at q 3: 190 MiB a minute there;
camera footage takes less; case 12 measures it)."""


def playback_rate(options: SessionOptions, stream_rate: Fraction) -> Fraction:
    """The rate frames are played and timecoded at: the override, else the stream's."""
    num, den = options.frame_rate_num, options.frame_rate_den
    if num is None and den is None:
        return stream_rate
    if num is None or num <= 0 or (den is not None and den <= 0):
        raise JitOptionsError(
            f"frame_rate_num={num}, frame_rate_den={den}: give a positive numerator "
            "(and denominator, default 1)"
        )
    return Fraction(num, den or 1)


class JitWorker:
    """Serves one JIT session to WebRTC viewers. See the module docstring."""

    def __init__(
        self,
        *,
        nc: Client,
        js: JetStreamContext,
        session_id: str,
        inputs: tuple[SessionInput, ...],
        options: SessionOptions,
        worker_id: str,
        policy: SourcePolicy,
        media_roots: tuple[Path, ...] = (),
        s3_endpoint_url: str | None = None,
        ice_servers: tuple[Mapping[str, Any], ...] = (),
        heartbeat_interval: float = 1.0,
        open_timeout: float = 10.0,
        instance_id: str = "",
        max_viewers: int = MAX_VIEWERS,
        connect_timeout: float = CONNECT_TIMEOUT,
        proxy_root: Path | None = None,
        proxy_bytes: int = PROXY_BYTES,
        proxy_min_work: float = proxy.MIN_WORK,
        max_output: tuple[int, int] | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self.session_id = subjects.token(session_id)
        self.inputs = inputs
        self.options = options
        self.worker_id = worker_id
        self.instance_id = instance_id
        self.access = InputAccess(
            policy=policy,
            media_roots=media_roots,
            s3_endpoint_url=s3_endpoint_url,
            region=options.region,
            open_timeout=open_timeout,
        )
        self.ice_servers = ice_servers
        self._ice = ice_configuration(ice_servers)  # a bad ICE server fails here, not later
        self.heartbeat_interval = heartbeat_interval
        self.max_viewers = max_viewers
        self.connect_timeout = connect_timeout
        self.proxy_root = proxy_root
        self.proxy_bytes = proxy_bytes
        self.proxy_min_work = proxy_min_work
        self.max_output = max_output
        """The box the picture is scaled down into when the options give no size (None: the
        video's own size, however big)."""
        self._proxy_thread: MediaThread | None = None
        self._proxy_store: ProxyStore | None = None
        self._proxy: ProxyReader | None = None
        self._proxy_builder: ProxyBuilder | None = None
        self.status = "new"
        self._inherited: JitStats | None = None
        """A predecessor's last stats, reported until this worker has its own (so that it
        dying while it opens the files does not lose the position for the next one)."""
        self.ready = False
        self._heartbeater = Heartbeater(
            nc, subjects.worker_heartbeat(worker_id), self._beat, interval=heartbeat_interval
        )
        self._viewer_beats = Heartbeater(
            nc,
            subjects.viewer_heartbeat("session", self.session_id),
            self._viewer_beat,
            interval=heartbeat_interval,
        )
        self._video_thread: MediaThread | None = None
        self._audio_thread: MediaThread | None = None
        self._video: VideoReader | None = None
        self._video_b_thread: MediaThread | None = None
        self._video_b: VideoReader | None = None
        self._ab: ABReader | None = None
        self._audio: AudioReader | None = None
        self._audio_inputs: list[AudioInput] = []
        self.layout = ChannelLayout(())
        self._start_timecode: str | None = None
        self.timecodes: Timecodes | None = None
        self.playback: Playback | None = None
        self.player: Player | None = None
        self._peers: list[Peer] = []
        self._subs: list[Subscription] = []
        self._tasks = Tasks(f"jit {self.session_id}")
        self._house_wake = asyncio.Event()
        self._stopped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the inputs, subscribe, and beat ``ready``. On an input or options problem:
        append ``SessionFailed``, close everything, raise the JitError. Safe to call twice."""
        if self.status != "new":
            return
        self.status = "starting"
        # Before this worker's own first beat replaces it: where a predecessor was.
        predecessor = self._inherited = await self._predecessor()
        await self._heartbeater.start()
        try:
            await self._open()
        except BaseException as exc:
            await self._close_media()
            await self._heartbeater.stop(last=self._beat())
            self.status = "failed"
            self._stopped.set()
            if isinstance(exc, JitError):
                await self._fail(str(exc))
                raise
            if isinstance(exc, Exception):
                await self._fail(f"internal error: {exc!r}")
                raise JitError(f"session {self.session_id}: internal error: {exc!r}") from exc
            raise
        assert self.player is not None
        self.status = "ready"
        try:
            if predecessor is not None:
                self._resume(predecessor)
            self.player.start()
            self._tasks.spawn(self._housekeeping(), name="housekeeping")
            if self.proxy_root is not None:
                self._tasks.spawn(self._sweep_proxies(self.proxy_root), name="proxy-sweep")
            for subject, callback in (
                (subjects.session_signal(self.session_id), self._on_signal),
                (subjects.session_control(self.session_id), self._on_control),
            ):
                self._subs.append(await self._nc.subscribe(subject, cb=callback))
            await self._nc.flush()
        except BaseException:
            await self.stop()  # NATS went away (or we were cancelled): undo it all
            raise
        self.ready = True
        self._heartbeater.poke()
        log.info(
            "jit session ready",
            extra={"session": self.session_id, "worker": self.worker_id},
        )

    async def _predecessor(self) -> JitStats | None:
        """What this session's previous worker last reported, if one ran: a worker started
        again after its process or its machine died finds its predecessor's last heartbeat in
        ``HEARTBEATS`` (None at a first start, or when it cannot be read)."""
        subject = subjects.worker_heartbeat(self.worker_id)
        try:
            raw = await self._js.get_last_msg(HEARTBEATS.name, subject, direct=True)
            beat = decode_heartbeat(raw.data or b"", subject)
        except (NotFoundError, MessageError, nats.errors.Error, TimeoutError):
            return None
        if not isinstance(beat, WorkerHeartbeat) or not isinstance(beat.stats, JitStats):
            return None
        # Read before this worker's first beat: any beat found is a predecessor's (comparing
        # its time with ours would trust two machines' clocks to agree).
        return beat.stats

    def _resume(self, stats: JitStats) -> None:
        """Pick up where the predecessor was: seek to the frame it reported, playing if it
        played. The viewer's page reconnects by itself and finds the picture it left."""
        assert self.playback is not None
        if stats.position <= 0:
            return
        now = time.monotonic()
        try:
            self.playback.seek(stats.position, now)
        except CommandError:
            return  # a position this file does not have
        if stats.playing:
            self.playback.play(now)
        log.info(
            "jit session resumed where its previous worker was",
            extra={"session": self.session_id, "frame": stats.position, "playing": stats.playing},
        )

    async def _open(self) -> None:
        """Open the video input (video thread) and the audio inputs (audio thread, in order)
        at the same time; the error of the lowest input number wins."""
        if not self.inputs:
            raise JitInputError(1, "missing: a session needs a video file as its first input")
        if self.options.compare and len(self.inputs) < 2:
            raise JitInputError(2, "missing: an A/B compare needs video B as its second input")
        self._video_thread = MediaThread(f"jit-video-{self.session_id}")
        self._audio_thread = MediaThread(f"jit-audio-{self.session_id}")
        opening = [self._video_thread.run(self._open_video)]
        if self.options.compare:
            self._video_b_thread = MediaThread(f"jit-video-b-{self.session_id}")
            opening.append(self._video_b_thread.run(self._open_video_b))
        opening.append(self._audio_thread.run(self._open_audio))
        results = await asyncio.gather(*opening, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        video, audio = self._video, self._audio
        assert video is not None and audio is not None
        settings = compare.initial(self.options)
        if settings is not None:
            assert self._video_b is not None and self._video_b_thread is not None
            self._ab = ABReader(video, self._video_b, self._video_b_thread, settings)
        self.layout = audio.layout
        selection = self.layout.default_selection(self.options.channels, self.options.cho)
        rate = playback_rate(self.options, video.rate)
        self.timecodes = Timecodes(rate, self._start_timecode)
        self.playback = Playback(rate, video.frame_count)
        await self._open_proxy(video, self.playback)
        self.player = Player(
            playback=self.playback,
            timecodes=self.timecodes,
            video=self._ab or video,
            video_thread=self._video_thread,
            audio=audio,
            audio_thread=self._audio_thread,
            selection=selection,
            proxy=self._proxy,
            proxy_thread=self._proxy_thread,
            cached=video.cached,
        )
        if self._proxy_builder is not None:
            self._proxy_builder.start()

    async def _open_proxy(self, video: VideoReader, playback: Playback) -> None:
        """Make the seek proxy's store (in its thread: a leftover is removed first) and its
        builder, when this session has one: one video, of known length."""
        if (
            self.proxy_root is None
            or self.proxy_bytes <= 0
            or self.options.compare
            or video.frame_count is None
        ):
            return
        self._proxy_thread = MediaThread(f"jit-proxy-{self.session_id}")
        folder = self.proxy_root / self.session_id
        try:
            store = await self._proxy_thread.run(ProxyStore, folder, self.proxy_bytes)
        except OSError as exc:  # a proxy only saves time: seek without one
            log.warning("no seek proxy: %s", exc, extra={"session": self.session_id})
            return
        self._proxy_store = store
        size = (video.converter.width, video.converter.height)
        self._proxy = ProxyReader(store, size)
        self._proxy_builder = ProxyBuilder(
            store,
            self._open_proxy_source,
            frame_count=video.frame_count,
            rate=video.rate,
            size=size,
            # Plain reads of the playback's fields, from the builder's thread.
            playhead=lambda: playback.position,
            busy=lambda: playback.playing,
            name=f"jit-proxy-build-{self.session_id}",
            min_work=self.proxy_min_work,
        )

    def _open_proxy_source(self) -> VideoReader:
        """The builder's own reader of the video (in the builder's thread): frame threads,
        and no cache (it reads forwards)."""
        options = msgspec.structs.replace(self.options, threads=BUILD_THREADS, thread_type="frame")
        container = open_input(self.inputs[0].url, 1, self.access)
        try:
            return VideoReader(
                container, options, index=1, cache_bytes=0, max_output=self.max_output
            )
        except BaseException:
            container.close()
            raise

    # These four run in the media threads. What they open is kept on the worker at once, so
    # that a start() cancelled mid-open still closes it (the close runs after, in the thread).

    def _open_video(self) -> None:
        container = open_input(self.inputs[0].url, 1, self.access)
        self._video = self._reader(container, 1)
        # Checked at the rate frames are labelled at (the session's override, if any).
        rate = playback_rate(self.options, self._video.rate)
        stream = container.streams.video[0]  # the stream the reader reads
        self._start_timecode = read_start_timecode(container, stream, rate, index=1)

    def _open_video_b(self) -> None:
        self._video_b = self._reader(open_input(self.inputs[1].url, 2, self.access), 2)

    def _reader(self, container: av.container.InputContainer, index: int) -> VideoReader:
        try:
            return VideoReader(
                container,
                self.options,
                index=index,
                max_output=self.max_output,
                readers=2 if self.options.compare else 1,  # A and B decode at once
            )
        except BaseException:
            container.close()
            raise

    def _open_audio(self) -> None:
        videos = 2 if self.options.compare else 1
        for index, item in enumerate(self.inputs[videos:], start=videos + 1):
            container = open_input(item.url, index, self.access)
            try:
                audio = AudioInput(container, index=index, channel_count=item.channel_count)
            except BaseException:
                container.close()
                raise
            self._audio_inputs.append(audio)
        self._audio = AudioReader(self._audio_inputs)

    def _close_video(self) -> None:
        video, self._video = self._video, None
        if video is not None:
            video.close()

    def _close_video_b(self) -> None:
        video, self._video_b = self._video_b, None
        if video is not None:
            video.close()

    def _close_audio(self) -> None:
        inputs, self._audio_inputs = self._audio_inputs, []
        self._audio = None
        for item in inputs:
            item.close()

    async def _fail(self, cause: str) -> None:
        log.warning("jit session failed: %s", cause, extra={"session": self.session_id})
        event = SessionFailed(at=time.time(), session_id=self.session_id, cause=cause)
        try:
            await append(self._js, event)
        except TesseraError as exc:
            log.error("cannot record the session failure: %s", exc)

    async def _close_media(self) -> None:
        """Stop the proxy builder, close the readers in their own threads (after anything
        still running there), end the threads, and remove the proxy."""
        builder, self._proxy_builder = self._proxy_builder, None
        if builder is not None:
            await asyncio.to_thread(builder.stop)
        if self._proxy_thread is not None:
            await self._proxy_thread.close()
        store, self._proxy_store = self._proxy_store, None
        if store is not None:
            await asyncio.to_thread(store.close)
        if self._video_thread is not None:
            await self._video_thread.close(self._close_video)
        # After A's: a read in A's thread may be waiting for B's frame.
        if self._video_b_thread is not None:
            await self._video_b_thread.close(self._close_video_b)
        if self._audio_thread is not None:
            await self._audio_thread.close(self._close_audio)

    async def stop(self) -> None:
        """Close viewers, stop playing, close inputs and threads. Safe to call twice."""
        if self.status in ("new", "stopping", "stopped", "failed"):
            return
        self.status = "stopping"
        self.ready = False
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        await self._tasks.close()
        peers, self._peers = self._peers, []
        for peer in peers:
            await self._close_peer(peer)
        if self.player is not None:
            await self.player.stop()
        await self._viewer_beats.stop()
        await self._close_media()
        self.status = "stopped"
        await self._heartbeater.stop(last=self._beat())
        self._stopped.set()
        log.info("jit session stopped", extra={"session": self.session_id})

    async def wait(self) -> None:
        """Return once the worker has stopped (or failed to start)."""
        await self._stopped.wait()

    async def __aenter__(self) -> JitWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- status ---------------------------------------------------------------------------------

    @property
    def viewers(self) -> int:
        """Viewers connected now."""
        return len(self.player.viewers) if self.player is not None else 0

    def stats(self) -> JitStats:
        """What the worker reports in its heartbeat."""
        playback, player = self.playback, self.player
        if playback is None or player is None:
            return self._inherited or JitStats()
        return JitStats(
            position=playback.position,
            playing=playback.playing,
            viewers=len(player.viewers),
            fps=round(player.fps, 2),
            seeks=playback.seeks,
            rate=playback.rate,
            frames=player.frames,
            frame_count=playback.frame_count or 0,
            late_frames=playback.late,
            dropped=player.dropped,
            read_errors=player.read_errors,
            start_timecode=self._start_timecode,
            channel_inputs=self.layout.channel_inputs,
            channel_names=self.layout.channel_names,
            routes=player.matrix.routes,
            compare=self._ab.settings if self._ab is not None else None,
            frame_count_b=(self._ab.b.frame_count or 0) if self._ab is not None else 0,
            proxy=self._proxy_builder.stats.status if self._proxy_builder is not None else "",
            proxy_frames=self._proxy_store.frames if self._proxy_store is not None else 0,
            proxy_bytes=self._proxy_store.bytes if self._proxy_store is not None else 0,
            proxy_pictures=player.proxy_pictures,
        )

    def _beat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            at=time.time(),
            worker_id=self.worker_id,
            kind="jit",
            target=self.session_id,
            instance_id=self.instance_id,
            ready=self.ready,
            stats=self.stats(),
        )

    def _viewer_beat(self) -> ViewerHeartbeat:
        return ViewerHeartbeat(at=time.time(), scope="session", id=self.session_id)

    # -- commands -------------------------------------------------------------------------------

    def apply(self, command: SessionCommand) -> CommandReply:
        """Apply one playback command now; the reply carries the position after it."""
        playback, player = self.playback, self.player
        if playback is None or player is None:
            return CommandReply(ok=False, error="the session is not ready")
        now = time.monotonic()
        try:
            match command:
                case Play():
                    playback.play(now)
                case Pause():
                    playback.pause(now)
                case Seek(frame=frame):
                    playback.seek(frame, now)
                    player.discard_queued()
                case SeekTimecode(timecode=text):
                    playback.seek(self._frame_of(text), now)
                    player.discard_queued()
                case Step(delta=delta):
                    playback.step(delta, now)
                    player.discard_queued()
                case SetRate(rate=rate):
                    playback.set_rate(rate, now)
                case SelectChannels(channels=channels):
                    player.select(self.layout.check(channels))
                case RouteChannels():
                    player.route(self._matrix_of(command))
                case Compare():
                    self._compare(command)
        except CommandError as exc:
            return CommandReply(
                ok=False,
                error=str(exc),
                position=playback.position,
                routes=self._routes_after(command),
                compare=self._compare_after(command),
            )
        player.wake()
        if isinstance(command, Play | Pause | SelectChannels | RouteChannels | Compare):
            self._heartbeater.poke()  # the page shows routing and compare from the stats
        return CommandReply(
            ok=True,
            position=playback.position,
            routes=self._routes_after(command),
            compare=self._compare_after(command),
        )

    def _compare(self, command: Compare) -> None:
        """Compose A and B as ``command`` says from the next picture (the current one is sent
        again when paused); CommandError when this is not an A/B compare, or for a bad value."""
        if self._ab is None or self.playback is None:
            raise CommandError(
                "not an A/B compare session: start one with two videos and compare "
                '("side-by-side", "wipe" or "difference") in POST /session'
            )
        self._ab.settings = compare.updated(self._ab.settings, command)
        self.playback.redraw()

    def _compare_after(self, command: SessionCommand) -> CompareState | None:
        """The compare settings in force, in the reply to a Compare (None for the others)."""
        if self._ab is None or not isinstance(command, Compare):
            return None
        return self._ab.settings

    def _routes_after(self, command: SessionCommand) -> Routes | None:
        """The routing in force, in the reply to a channel command (None for the others)."""
        if self.player is None or not isinstance(command, SelectChannels | RouteChannels):
            return None
        return self.player.matrix.routes

    def _matrix_of(self, command: RouteChannels) -> ChannelMatrix:
        """The matrix a RouteChannels asks for; CommandError when it cannot be had."""
        if command.preset and command.routes:
            raise CommandError("give routes or a preset, not both")
        if command.preset:
            return preset_matrix(command.preset, self.layout, command.input)
        return check_routes(command.routes, self.layout)

    def _frame_of(self, text: str) -> int:
        """The frame a source time code names; CommandError when none does."""
        assert self.timecodes is not None and self.playback is not None
        try:
            return self.timecodes.frame_of(text, self.playback.frame_count)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def _reply_to(self, data: bytes, where: str) -> CommandReply:
        try:
            command = decode_session_command(data, where)
        except MessageError as exc:
            return CommandReply(ok=False, error=str(exc))
        return self.apply(command)

    async def _on_control(self, msg: Msg) -> None:
        reply = self._reply_to(msg.data, msg.subject)
        await self._respond(msg, encode(reply))

    def _on_channel_open(self, peer: Peer) -> None:
        # The channel may open after the viewer's first frame went out: tell it where it is.
        if self.player is not None and self.player.last_report:
            peer.send_text(self.player.last_report)

    def _on_channel_message(self, peer: Peer, message: str | bytes) -> None:
        data = message.encode() if isinstance(message, str) else message
        reply = self._reply_to(data, "the control data channel")
        peer.send_text(encode(reply).decode())

    async def _respond(self, msg: Msg, payload: bytes) -> None:
        if not msg.reply:
            return
        try:
            await msg.respond(payload)
        except nats.errors.Error as exc:
            log.warning("cannot reply on %s: %s", msg.subject, exc)

    # -- signalling -----------------------------------------------------------------------------

    async def _on_signal(self, msg: Msg) -> None:
        reply: msgspec.Struct
        try:
            request = decode_signal_request(msg.data)
        except MessageError as exc:
            reply = SignalAnswer(error=str(exc))
        else:
            match request:
                case SignalOffer(sdp=sdp):
                    reply = await self._offer(sdp)
                case SignalHangup(peer_id=peer_id):
                    reply = await self._hangup(peer_id)
        await self._respond(msg, encode(reply))

    async def _offer(self, sdp: str) -> SignalAnswer:
        if self.status != "ready":
            return SignalAnswer(error=f"the session is {self.status}")
        if len(self._peers) >= self.max_viewers:
            return SignalAnswer(
                error=f"the session has {len(self._peers)} viewers, its maximum: try later"
            )
        peer = Peer(RTCPeerConnection(self._ice), audio=receives(sdp, "audio"))
        # Listed before the first await: a stop() during the answer closes it too.
        self._peers.append(peer)
        peer.watch(self._peer_changed, self._on_channel_open, self._on_channel_message)
        try:
            answer = await peer.answer(sdp)
        except JitError as exc:
            await self._close_peer(peer)
            return SignalAnswer(error=str(exc))
        log.info("viewer offered", extra={"session": self.session_id, "peer": peer.peer_id})
        return SignalAnswer(sdp=answer)

    async def _hangup(self, peer_id: str) -> CommandReply:
        for peer in self._peers:
            if peer.peer_id and peer.peer_id == peer_id:
                await self._close_peer(peer)
                return CommandReply(ok=True)
        return CommandReply(ok=False, error=f"no viewer {peer_id!r} in session {self.session_id}")

    def _peer_changed(self, peer: Peer) -> None:
        state = peer.state
        log.debug("viewer %s: %s", peer.peer_id, state, extra={"session": self.session_id})
        if state == "connected" and not peer.connected and not peer.gone:
            peer.connected = True
            if self.player is not None:
                self.player.add(peer)
        elif state in ("failed", "closed"):
            peer.gone = True
            if self.player is not None:
                self.player.remove(peer)
        self._house_wake.set()

    async def _close_peer(self, peer: Peer) -> None:
        """Close one viewer's peer connection. It stays listed until closed, and the close is
        shielded: when stop() cancels the housekeeping in the middle of one, the close runs on
        and stop() closes the peer again, which waits for it (a peer dropped from the list
        first and then cancelled left its ICE sockets open: seen as unclosed UDP transports)."""
        if self.player is not None:
            self.player.remove(peer)
        try:
            await asyncio.wait_for(asyncio.shield(peer.close()), STOP_PEER_TIMEOUT)
        except TimeoutError:
            log.warning("viewer %s did not close in time", peer.peer_id)
        if peer in self._peers:
            self._peers.remove(peer)
        self._house_wake.set()

    async def _sweep_proxies(self, root: Path) -> None:
        """Once, at start: remove the seek proxies that sessions left on this machine when
        their worker died and was never started again (a session ended meanwhile), so that
        the disk they hold (up to ``TESSERA_JIT_PROXY_MIB`` each) comes back."""
        stale = await asyncio.to_thread(proxy.stale_proxies, root, self.session_id, time.time())
        if not stale:
            return
        running: set[str] = set()
        try:
            kv = await self._js.key_value(SESSIONS.name)
        except NATS_ERRORS as exc:
            log.info("proxy sweep skipped: %s", exc, extra={"session": self.session_id})
            return  # cannot tell which still run: keep them all
        for folder in stale:
            try:
                entry = await kv.get(folder.name)
                state = decode_entry(SESSIONS.name, entry.value).state if entry.value else None
            except NotFoundError:
                continue  # no such session (any more)
            except (*NATS_ERRORS, TesseraError) as exc:
                # Cannot tell whether it runs: keep it.
                log.info("proxy of %s kept: %s", folder.name, exc)
                running.add(folder.name)
                continue
            if state is not None and state.phase in ("requested", "running"):
                running.add(folder.name)
        removed = await asyncio.to_thread(proxy.sweep, stale, running)
        if removed:
            log.info(
                "removed the seek proxies of %d sessions that no longer run",
                len(removed),
                extra={"session": self.session_id, "proxies": [f.name for f in removed]},
            )

    async def _housekeeping(self) -> None:
        """Drop gone and never-connected viewers; keep the viewer heartbeat while watched."""
        while True:
            await wait_set(self._house_wake, self.heartbeat_interval)
            self._house_wake.clear()
            now = time.monotonic()
            for peer in list(self._peers):
                late = not peer.connected and now - peer.created > self.connect_timeout
                if peer.gone or late:
                    await self._close_peer(peer)
            if self.viewers:
                await self._viewer_beats.start()
            else:
                await self._viewer_beats.stop()
