"""The session's player: one clock, one decoder, every viewer fed from it.

Two tasks, running only while a viewer is connected:

- **video**: asks :class:`~pipeline.producers.jit.playback.Playback` what frame is due and
  when, has the video thread decode it (the next one is requested as soon as the current one
  is sent, so decoding overlaps the wait), and at its time hands it to every viewer's track
  with a :class:`~pipeline.messages.control.FrameReport` on their control channels (with the
  picture's stamp on the session's 90 kHz clock, :mod:`~pipeline.producers.jit.rtpclock`: how
  the page knows a frame from its RTP timestamp). A decode that finishes after a command
  changed what is due (``Playback.version``) is dropped, and a seek or step empties the
  viewers' queues: the first frame sent after ``Seek(n)`` is ``n``. A decode for an older
  version is called off between two frames (``stop``), so the next one does not wait for it.
  Playing starts (after play, a seek, a new rate) when its first picture goes out, however
  long that picture's decode takes: a seek into a long GOP while playing goes on from the frame
  asked for, with its sound, rather than skipping to catch up the seconds the decode took.
  With a seek proxy (:mod:`~pipeline.producers.jit.proxy`), a frame due while paused (a seek,
  a step) or first after a seek while playing, whose exact picture is not at hand (cached or
  decoded), is first sent as the proxy's picture of that frame (its report says ``exact:
  false``), read in the proxy thread, then again as the exact picture once decoded (``exact:
  true``), unless a command came first. A seek's proxy picture is read and sent before its
  exact decode starts (the JPEG then has the CPU to itself); a step one frame forward waits
  its grace for the exact picture first (:mod:`~pipeline.producers.jit.grace`: 25 ms, none
  once steps are slow, and then it too goes proxy first).
- **audio**: every 20 ms, the 960 samples at the playback's media time (while playing at
  rate 1; silence otherwise), read from the audio thread in 100 ms blocks, mixed through the
  routing matrix (:mod:`~pipeline.producers.jit.routing`; a new one fades in over a packet)
  into s16 stereo. When the audio cursor and the video timeline part by
  more than :data:`RESYNC_SAMPLES` (after a seek, a pause, a stall), the cursor jumps to the
  video's time: audio follows video.

When the last viewer leaves, playback pauses (nobody watches; a viewer who comes back finds
the frame they left), and both tasks wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pipeline.messages.codec import encode
from pipeline.messages.control import FrameReport
from pipeline.producers.jit.audio import FRAME_SAMPLES, RATE, AudioReader, Mixer, Samples, silence
from pipeline.producers.jit.decoder import Picture, ReadInterrupted
from pipeline.producers.jit.errors import ReadError
from pipeline.producers.jit.grace import StepGrace
from pipeline.producers.jit.playback import Due, Playback
from pipeline.producers.jit.proxy import ProxyReader
from pipeline.producers.jit.routing import ChannelMatrix, selection_matrix
from pipeline.producers.jit.rtpclock import VideoClock, rtp_of
from pipeline.producers.jit.threads import MediaThread
from pipeline.producers.jit.timecode import Timecodes
from pipeline.producers.jit.tracks import SessionAudioTrack, SessionVideoTrack
from pipeline.runtime.tasks import Tasks, wait_set

log = logging.getLogger("tessera.jit")

READ_AHEAD = 5 * FRAME_SAMPLES
"""Samples read from the audio thread at once: 100 ms, five 20 ms frames."""
RESYNC_SAMPLES = 2 * FRAME_SAMPLES
"""Audio further than 40 ms from the video timeline jumps to it (a lip-sync error under
45 ms is not noticed: ITU-R BT.1359)."""
AUDIO_PERIOD = FRAME_SAMPLES / RATE
MAX_AUDIO_LAG = 0.2
"""Seconds the audio clock may fall behind before it restarts at "now" instead of bursting."""
FPS_WINDOW = 2.0


class FrameSource(Protocol):
    """What the player reads pictures from: a :class:`~.decoder.VideoReader`, or an A/B compare's
    :class:`~pipeline.producers.jit.abreader.ABReader` (A's frames with B's composed in)."""

    @property
    def time_base(self) -> Fraction: ...

    def read(
        self, n: int, stop: Callable[[], bool] | None = None, hurry: bool = False
    ) -> Picture | None: ...


class Viewer(Protocol):
    """What the player needs of a connected viewer."""

    @property
    def video(self) -> SessionVideoTrack: ...

    @property
    def audio(self) -> SessionAudioTrack | None: ...

    def send_text(self, text: str) -> None: ...


class Player:
    """Plays one session to its viewers; see the module docstring."""

    def __init__(
        self,
        *,
        playback: Playback,
        video: FrameSource,
        video_thread: MediaThread,
        audio: AudioReader,
        audio_thread: MediaThread,
        selection: tuple[int, ...],
        timecodes: Timecodes | None = None,
        clock: Callable[[], float] = time.monotonic,
        proxy: ProxyReader | None = None,
        proxy_thread: MediaThread | None = None,
        cached: Callable[[int], bool] = lambda n: True,
    ) -> None:
        self.playback = playback
        self.timecodes = timecodes or Timecodes(playback.fps)
        """How frames are labelled (the source time code; from 00:00:00:00 by default)."""
        self._video = video
        self._video_thread = video_thread
        self._audio = audio
        self._audio_thread = audio_thread
        self._clock = clock
        self.rate: Fraction = playback.fps
        self.time_base: Fraction = video.time_base
        self.viewers: list[Viewer] = []
        self.selection = selection
        self._mixer = Mixer(selection_matrix(selection), audio.layout.total)
        self._wake = asyncio.Event()
        self._present = asyncio.Event()
        self._tasks = Tasks("jit player")
        self._prefetch: tuple[tuple[int, int], asyncio.Future[Picture | None]] | None = None
        self._sent_times: deque[float] = deque(maxlen=512)
        self.frames = 0
        self._shown: Picture | None = None
        self._sent_proxy: tuple[int, int] | None = None
        """(frame, version) of the last proxy picture sent before its exact decode began."""
        self._steps = StepGrace()
        """How long a step forward waits for its exact picture before the proxy's."""
        self._shown_pts = 0
        self._video_clock = VideoClock()
        self.last_report = ""
        """The last FrameReport sent (JSON): a control channel that opens late gets it."""
        self.read_errors = 0
        self.last_error = ""
        self._cursor: int | None = None
        self._abuf: Samples = np.zeros((audio.layout.total, 0), dtype=np.float32)
        self._abuf_start = 0
        self._audio_failing = False
        self._proxy = proxy if proxy_thread is not None else None
        self._proxy_thread = proxy_thread
        self._cached = cached
        """Whether the exact picture of a frame is at hand (then no proxy picture is read)."""
        self.proxy_pictures = 0
        """Proxy pictures sent (each followed by its exact picture, or by a command)."""
        self._stopping = False

    # -- control (called on the loop, never blocks) -------------------------------------------

    def add(self, viewer: Viewer) -> None:
        """A viewer connected: it gets the current frame at once (only it: the others have
        it), then whatever plays. Its report comes when its control channel opens."""
        if viewer in self.viewers:
            return
        self.viewers.append(viewer)
        self._present.set()
        shown = self._shown
        playback = self.playback
        if shown is not None and not playback.playing and playback.pending is None:
            if shown.frame == playback.position:
                # With the pts it went out with: the report its control channel gets on
                # opening names that pts, and on a new track any pts comes first.
                viewer.video.offer(shown.data, self._shown_pts)
                return
        playback.refresh()
        self.wake()

    def remove(self, viewer: Viewer) -> None:
        """A viewer left; with nobody left, playback pauses."""
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        if not self.viewers:
            self._present.clear()
            self.playback.pause(self._clock())
            self.wake()

    def wake(self) -> None:
        """Something changed (a command, a viewer): recompute what is due."""
        self._wake.set()

    def discard_queued(self) -> None:
        """Drop frames queued for viewers but not yet encoded (a seek made them stale)."""
        for viewer in self.viewers:
            viewer.video.flush()

    def select(self, selection: tuple[int, ...]) -> None:
        """Route ``selection`` (already checked) to the stereo output from the next frame."""
        self.route(selection_matrix(selection))
        self.selection = selection

    def route(self, matrix: ChannelMatrix) -> None:
        """Mix through ``matrix`` (already checked) from the next packet, faded in over it."""
        self._mixer.route(matrix)
        self.selection = matrix.sources

    @property
    def matrix(self) -> ChannelMatrix:
        """The routing matrix in force."""
        return self._mixer.matrix

    @property
    def fps(self) -> float:
        """Frames sent per second over the last couple of seconds."""
        now = self._clock()
        recent = [t for t in self._sent_times if now - t <= FPS_WINDOW]
        return len(recent) / FPS_WINDOW

    @property
    def dropped(self) -> int:
        """Frames and audio packets dropped in the connected viewers' queues."""
        total = 0
        for viewer in self.viewers:
            total += viewer.video.dropped
            if viewer.audio is not None:
                total += viewer.audio.dropped
        return total

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the video and audio tasks."""
        if not self._tasks:
            self._tasks.spawn(self._video_loop(), name="video")
            self._tasks.spawn(self._audio_loop(), name="audio")

    async def stop(self) -> None:
        """Stop both tasks. Safe to call twice; the threads are the caller's to close."""
        self._stopping = True  # a decode under way ends at its next frame
        await self._tasks.close()
        self._drop_prefetch()

    # -- video ----------------------------------------------------------------------------------

    def _drop_prefetch(self) -> None:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch[1].cancel()

    def _request(self, due: Due) -> asyncio.Future[Picture | None]:
        # Keyed by the version too: a command that changes the picture but not the frame (an
        # A/B compare's mode or offset, ``Playback.redraw``) makes a prefetch stale.
        key = (due.frame, due.version)
        if self._prefetch is None or self._prefetch[0] != key:
            self._drop_prefetch()
            version = due.version

            def stale() -> bool:  # asked in the video thread between decoded frames
                return self._stopping or self.playback.version != version

            read = self._video_thread.submit(self._video.read, due.frame, stale, due.hurry)
            self._prefetch = (key, read)
        return self._prefetch[1]

    def _at_hand(self, due: Due) -> bool:
        """Whether ``due``'s exact picture is cached or already decoded."""
        if self._cached(due.frame):
            return True
        prefetch = self._prefetch
        if prefetch is None or prefetch[0] != (due.frame, due.version):
            return False
        return prefetch[1].done()

    def _proxied(self, due: Due) -> bool:
        # Paused (a seek, a step), or playing from a seek (its first picture); the seek proxy
        # has the frame, and its exact picture is not at hand.
        return (
            (due.tick is None or self.playback.seek_starting)
            and self._proxy is not None
            and self._proxy.has(due.frame)
            and not self._at_hand(due)
        )

    def _proxy_first(self, due: Due, step: bool) -> bool:
        """Whether ``due``'s proxy picture goes out before its exact decode starts: its exact
        picture is not expected within the grace (a seek, a step that is not one frame
        forward, or a step forward once steps are slow). The proxy's JPEG is then decoded
        with the CPU to itself: a UHD decode's frame threads took both cores from it (first
        pictures of 30-50 ms at p95, bench case 12), and a seek no longer waits the grace."""
        return self._proxied(due) and (not step or self._steps.grace == 0)

    async def _send_proxy(self, due: Due) -> None:
        """Read ``due``'s proxy picture and send it (its exact one follows)."""
        assert self._proxy is not None and self._proxy_thread is not None
        try:
            picture = await self._proxy_thread.submit(self._proxy.read, due.frame)
        except Exception:  # noqa: BLE001 - the proxy only saves time: the exact one follows
            log.warning("proxy picture %d failed", due.frame, exc_info=True)
            return
        if self._send_proxy_picture(picture, due):
            self._sent_proxy = (due.frame, due.version)

    def _send_proxy_picture(self, picture: Picture | None, due: Due) -> bool:
        """Send ``due``'s proxy picture unless there is none or a command changed what is
        due; whether it went out."""
        if picture is None or due.version != self.playback.version:
            return False
        self._send(picture, due)
        self.proxy_pictures += 1
        return True

    def _wants_proxy(self, due: Due, exact: asyncio.Future[Picture | None]) -> bool:
        """Whether ``due``'s proxy picture goes out unless its exact one comes within the
        grace (a step forward at 1080p: ~20 ms)."""
        return (
            self._proxied(due) and not exact.done() and self._sent_proxy != (due.frame, due.version)
        )

    async def _show_proxy(self, due: Due, exact: asyncio.Future[Picture | None]) -> None:
        """Unless the exact picture comes within the step grace, send ``due``'s proxy
        picture (read meanwhile), then wait until the exact one is decoded or a command
        changed what is due."""
        assert self._proxy is not None and self._proxy_thread is not None
        quick = self._proxy_thread.submit(self._proxy.read, due.frame)
        await asyncio.wait({exact}, timeout=self._steps.grace)
        if not exact.done():
            # Whichever is first: an exact picture that comes before the proxy's is sent alone.
            await asyncio.wait({exact, quick}, return_when=asyncio.FIRST_COMPLETED)
        if exact.done():
            quick.cancel()  # its result is dropped (a read under way finishes)
            return
        try:
            picture = quick.result()
        except Exception:  # noqa: BLE001 - the proxy only saves time: the exact one follows
            log.warning("proxy picture %d failed", due.frame, exc_info=True)
            return
        if not exact.done() and self._send_proxy_picture(picture, due):
            await self._until_decoded(due, exact)

    async def _until_decoded(self, due: Due, exact: asyncio.Future[Picture | None]) -> None:
        """Wait until ``due``'s exact picture is decoded or a command changed what is due (a
        newer seek's proxy picture then goes out at once, not after the older decode has
        been called off at its next frame: 100 ms and more at UHD)."""
        exact.add_done_callback(lambda _: self.wake())
        while not exact.done() and due.version == self.playback.version:
            await self._wait(None)

    async def _wait(self, seconds: float | None) -> None:
        await wait_set(self._wake, seconds)
        self._wake.clear()

    async def _video_loop(self) -> None:
        while True:
            if not self.viewers:
                self._drop_prefetch()
                await self._present.wait()
                continue
            now = self._clock()
            due = self.playback.due(now)
            if due is None:
                await self._wait(None)
                continue
            if due.at > now:
                self._request(due)  # decoded while it waits
                await self._wait(due.at - now)
                continue
            shown = self._shown
            # A step forward whose picture is not at hand: how long it waits tells whether the
            # next ones should wait for it before the proxy's (StepGrace).
            step = (
                due.tick is None
                and shown is not None
                and due.frame == shown.frame + 1
                and not self._at_hand(due)
            )
            asked = self._clock()
            if self._proxy_first(due, step):
                await self._send_proxy(due)
                if due.version != self.playback.version:
                    continue  # a newer command: its own proxy picture goes out at once
            future = self._request(due)
            if self._sent_proxy == (due.frame, due.version):
                await self._until_decoded(due, future)
            elif self._wants_proxy(due, future):
                await self._show_proxy(due, future)
            if due.version != self.playback.version:
                continue  # a newer command: its own proxy picture goes out at once
            try:
                picture = await future
            except ReadInterrupted:
                self._prefetch = None
                continue  # called off by a newer command
            except ReadError as exc:
                self._prefetch = None
                self._read_failed(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug or an odd file: say so, keep serving
                log.exception("video frame %d failed unexpectedly", due.frame)
                self._prefetch = None
                self._read_failed(ReadError(f"frame {due.frame}: internal error: {exc!r}"))
                continue
            self._prefetch = None
            if step:
                self._steps.waited(self._clock() - asked)
            if due.version != self.playback.version:
                continue  # a command changed what is due while this frame decoded
            if picture is None:
                self._video_ended(due)
                continue
            self._send(picture, due)
            following = self.playback.due(self._clock())
            if following is not None:
                self._request(following)

    def _read_failed(self, exc: ReadError) -> None:
        self.read_errors += 1
        self.last_error = str(exc)
        log.warning("video read failed; pausing: %s", exc)
        self.playback.halt()

    def _video_ended(self, due: Due) -> None:
        if due.frame == 0:
            self._read_failed(ReadError("the video has no frame 0 any more"))
        else:
            self.playback.ended(due.frame)

    def _send(self, picture: Picture, due: Due) -> None:
        now = self._clock()
        starting = self.playback.starting
        self.playback.sent(due, now, exact=picture.exact)
        self.frames += 1
        self._sent_times.append(now)
        # A one-shot frame goes out now, and so does a schedule's first (the schedule starts
        # when it goes out); the others are stamped from their schedule (anchor and exact
        # offset), so a run's pts step by 90000/fps (to the 100 µs: rtpclock).
        if due.tick is None or starting:
            pts = self._video_clock.stamp(now)
        else:
            pts = self._video_clock.stamp(due.anchor, due.offset)
        report = FrameReport(
            frame=picture.frame,
            timecode=self.timecodes.label(picture.frame),
            pts=float(picture.pts * self.time_base),
            playing=self.playback.playing,
            rtp=rtp_of(pts),
            frame_b=picture.frame_b,
            exact=picture.exact,
        )
        text = encode(report).decode()
        self.last_report = text
        self._shown = picture
        self._shown_pts = pts
        for viewer in list(self.viewers):
            viewer.video.offer(picture.data, pts)
            viewer.send_text(text)

    # -- audio ----------------------------------------------------------------------------------

    async def _audio_loop(self) -> None:
        next_at: float | None = None
        while True:
            if not self.viewers:
                next_at = None
                await self._present.wait()
                continue
            now = self._clock()
            if next_at is None or now - next_at > MAX_AUDIO_LAG:
                next_at = now
            if next_at > now:
                await asyncio.sleep(next_at - now)
            at = next_at
            next_at += AUDIO_PERIOD
            packed = await self._audio_at(at)
            for viewer in list(self.viewers):
                if viewer.audio is not None:
                    viewer.audio.offer(packed)

    async def _audio_at(self, at: float) -> npt.NDArray[np.int16]:
        media = self.playback.media_time(at)
        if media is None or self._audio.layout.total == 0:
            self._cursor = None
            self._mixer.settle()  # nothing heard: a new matrix applies at once when it plays
            return silence()
        wanted = round(media * RATE)
        if self._cursor is None or abs(self._cursor - wanted) > RESYNC_SAMPLES:
            self._cursor = wanted
        try:
            block = await self._audio_block(self._cursor)
        except Exception as exc:  # noqa: BLE001 - audio must not stop the session: silence
            if not self._audio_failing:
                # Logged once per run of failures; a bug (not a ReadError) with its traceback.
                log.warning(
                    "audio read failed; sending silence: %s",
                    exc,
                    exc_info=not isinstance(exc, ReadError),
                )
                self.read_errors += 1
                self.last_error = str(exc)
            self._audio_failing = True
            self._cursor = None
            self._abuf = self._abuf[:, :0]
            return silence()
        self._audio_failing = False
        self._cursor += FRAME_SAMPLES
        return self._mixer.mix(block)

    async def _audio_block(self, start: int) -> Samples:
        """``FRAME_SAMPLES`` samples from ``start``, from the buffer or the audio thread."""
        end = self._abuf_start + self._abuf.shape[1]
        if start < self._abuf_start or start > end:
            # Not a continuation: drop the buffer and read from the new position.
            self._abuf = self._abuf[:, :0]
            self._abuf_start = end = start
        if start + FRAME_SAMPLES > end:
            more = await self._audio_thread.run(self._audio.read, end, READ_AHEAD)
            self._abuf = np.concatenate([self._abuf, more], axis=1)
        offset = start - self._abuf_start
        block = self._abuf[:, offset : offset + FRAME_SAMPLES]
        self._abuf = self._abuf[:, offset + FRAME_SAMPLES :]
        self._abuf_start = start + FRAME_SAMPLES
        return block
