"""A session's seek proxy: the video again as intra-only JPEG pictures on disk, so that a seek
into a long GOP shows its frame at once while the exact picture is decoded.

Why: a decoder starts at a keyframe, so a seek into a 250-frame GOP decodes 125 frames on
average before the picture exists (about 2 s at 1080p on one core, 10 at UHD), and libavcodec
has no way to save and restore a decoder's state at other points. Every frame of the proxy
is a keyframe: one JPEG decode (a quarter of the output's pixels) and a scale to the output
size, a few ms. A seek shows the proxy picture of exactly the frame asked for (its frame
number, marked ``exact: false`` in its report), and then the exact picture when it is decoded
(:mod:`.player`); steps within the cache of decoded pictures never need it.

- :class:`ProxyStore`: the files, one per chunk (:mod:`.proxyplan`), in a folder of the
  session under the worker's proxy root, and the index of where each frame's JPEG is; bounded
  in bytes; removed, folder and all, when the session ends (and when a new worker of the same
  session starts, in case its predecessor died without removing it). Thread-safe.
- :class:`ProxyBuilder`: one thread (``jit-proxy-build-<session>``) at the lowest CPU priority
  (nice 19: any decode for a viewer comes first), with its own reader of the video, that
  builds the chunks :func:`~.proxyplan.next_step` names while the session is paused (a
  session that plays decodes forwards anyway, and playing needs the CPU).
- :class:`ProxyReader`: proxy pictures by frame number, read in its own media thread
  (``jit-proxy-<session>``), so that a proxy picture never waits behind an exact decode.

The proxy is the output pictures' yuv420p planes (BT.709, limited range, as the session sends
them) coded as they are by the JPEG codec (as ``yuvj420p``: no range conversion either way),
at the output size up to 1080p's pixels (:func:`~.proxyplan.proxy_size`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from pipeline.producers.jit import proxyplan
from pipeline.producers.jit.decoder import Picture, VideoReader
from pipeline.producers.jit.errors import JitError

log = logging.getLogger("tessera.jit")

BUILD_NICE = 19
"""The builder thread's nice value: it takes only CPU nothing else wants."""
BUILD_THREADS = 2
"""Frame threads of the builder's decoder (they inherit its priority)."""
MIN_WORK = 48.0
"""A proxy is built only when a seek may decode more than this many 1080p frames' worth (the
longest GOP of the first :data:`SCAN_SECONDS`, times the picture's pixels over 1080p's):
about 0.8 s of a core. Short GOPs seek fast enough without one (case 6's 720p GOP-50 file is
22: seek p95 38 ms), and the build would cost a whole decode of the file."""
SCAN_SECONDS = 20
IDLE_POLL = 0.1
"""Seconds the builder waits before it looks again while playing or with nothing to build."""


@dataclass(frozen=True)
class _Entry:
    chunk: int
    path: Path
    offset: int
    size: int
    pts: int


class ProxyStore:
    """The proxy's chunk files in ``folder`` (made empty) and their index, within ``budget``
    bytes. Written by the builder thread, read by the proxy thread: every method is safe from
    any thread."""

    def __init__(self, folder: Path, budget: int) -> None:
        self.folder = folder
        self.budget = budget
        shutil.rmtree(folder, ignore_errors=True)  # a predecessor's, if it died
        folder.mkdir(parents=True)
        self._lock = threading.Lock()
        self._frames: dict[int, _Entry] = {}
        self._chunks: dict[int, int] = {}
        """Complete chunks and their bytes."""
        self._writing: tuple[int, int] | None = None
        """The chunk being written and its bytes so far."""
        self.bytes = 0
        self.peak_bytes = 0
        self.evicted = 0
        self.closed = False
        self._made = 0

    def _path(self, chunk: int) -> Path:
        # A number per file made: a chunk dropped and made again is a new file, so a reader
        # holding an old index entry cannot read the new file's bytes as its frame.
        self._made += 1
        return self.folder / f"{chunk:06d}-{self._made}.mjpeg"

    def has(self, frame: int) -> bool:
        """Whether frame ``frame`` is in the proxy."""
        return frame in self._frames

    @property
    def frames(self) -> int:
        """Frames in the proxy now."""
        return len(self._frames)

    def built(self) -> dict[int, int]:
        """Complete chunks and their bytes (a copy)."""
        with self._lock:
            return dict(self._chunks)

    def get(self, frame: int) -> tuple[bytes, int] | None:
        """The JPEG of ``frame`` and its source pts; None when not (or no longer) there."""
        entry = self._frames.get(frame)
        if entry is None:
            return None
        try:
            with open(entry.path, "rb") as f:
                data = os.pread(f.fileno(), entry.size, entry.offset)
        except OSError:
            return None  # dropped meanwhile
        return (data, entry.pts) if len(data) == entry.size else None

    def write_chunk(self, chunk: int) -> ChunkWriter:
        """Start writing ``chunk`` (its frames become readable as they are added)."""
        with self._lock:
            if self.closed:
                raise JitError(f"the proxy in {self.folder} is closed")
            self._writing = (chunk, 0)
            path = self._path(chunk)
        return ChunkWriter(self, chunk, path)

    def _added(self, frame: int, entry: _Entry) -> None:
        with self._lock:
            assert self._writing is not None
            chunk, size = self._writing
            self._writing = (chunk, size + entry.size)
            self._frames[frame] = entry
            self.bytes += entry.size
            self.peak_bytes = max(self.peak_bytes, self.bytes)

    def _finished(self, chunk: int, size: int) -> None:
        with self._lock:
            self._writing = None
            self._chunks[chunk] = size

    def evict(self, chunk: int) -> None:
        """Drop ``chunk`` (complete or being written) and its file."""
        with self._lock:
            paths = {e.path for e in self._frames.values() if e.chunk == chunk}
            size = self._chunks.pop(chunk, None)
            if self._writing is not None and self._writing[0] == chunk:
                size = self._writing[1]
                self._writing = None
            for frame in [f for f, e in self._frames.items() if e.chunk == chunk]:
                del self._frames[frame]
            if size is not None:
                self.bytes -= size
                self.evicted += 1
        for path in paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Forget the proxy and remove its folder. Safe to call twice."""
        with self._lock:
            self.closed = True
            self._frames.clear()
            self._chunks.clear()
            self._writing = None
            self.bytes = 0
        shutil.rmtree(self.folder, ignore_errors=True)


class ChunkWriter:
    """Appends one chunk's JPEGs to its file; see :meth:`ProxyStore.write_chunk`."""

    def __init__(self, store: ProxyStore, chunk: int, path: Path) -> None:
        self._store = store
        self.chunk = chunk
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed by finish() or abandon()
        self.size = 0

    def add(self, frame: int, pts: int, data: bytes) -> None:
        """Append frame ``frame``'s JPEG; readable once this returns."""
        self._file.write(data)
        self._file.flush()  # in the page cache: the proxy thread's own open sees it
        self._store._added(frame, _Entry(self.chunk, self.path, self.size, len(data), pts))
        self.size += len(data)

    def finish(self) -> None:
        """The chunk is complete."""
        self._file.close()
        self._store._finished(self.chunk, self.size)

    def abandon(self) -> None:
        """Drop what was written of the chunk."""
        self._file.close()
        self._store.evict(self.chunk)
        self.path.unlink(missing_ok=True)  # nothing of it indexed yet, perhaps


def jpeg_encoder(width: int, height: int) -> av.VideoCodecContext:
    """An MJPEG encoder of ``width`` x ``height`` pictures at :data:`~.proxyplan.QUALITY`."""
    ctx = av.CodecContext.create("mjpeg", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    # qmin = qmax pins the quantiser: every picture at the same quality, no rate control.
    ctx.qmin = ctx.qmax = proxyplan.QUALITY
    ctx.thread_count = 1
    return ctx


def encode_jpeg(encoder: av.VideoCodecContext, data: npt.NDArray[np.uint8]) -> bytes:
    """One output picture (yuv420p planes) as a JPEG of the same planes."""
    frame = av.VideoFrame.from_ndarray(data, format="yuvj420p")
    packets = encoder.encode(frame)
    return b"".join(bytes(p) for p in packets)


@dataclass
class BuildStats:
    """What a builder did: frames made, and the CPU and wall seconds it spent."""

    frames: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    status: str = "new"
    """new, building, playing (paused while the session plays), done, full (no room for the
    next chunk near the playhead: it waits for the playhead to move), skipped (short GOPs:
    seeks are cheap without a proxy), failed, stopped."""


class ProxyBuilder:
    """Builds ``store`` from a reader that ``open_reader`` opens (in the builder's thread);
    see the module docstring. ``playhead()`` and ``busy()`` are read from that thread:
    they must only read plain values."""

    def __init__(
        self,
        store: ProxyStore,
        open_reader: Callable[[], VideoReader],
        *,
        frame_count: int,
        rate: Fraction,
        size: tuple[int, int],
        playhead: Callable[[], int],
        busy: Callable[[], bool] = lambda: False,
        name: str = "jit-proxy-build",
        nice: int = BUILD_NICE,
        min_work: float = MIN_WORK,
    ) -> None:
        self.store = store
        self._open_reader = open_reader
        self.frame_count = frame_count
        self.per_chunk = proxyplan.chunk_frames(rate)
        self.chunks = proxyplan.chunk_count(frame_count, self.per_chunk)
        self.size = proxyplan.proxy_size(*size)
        self._playhead = playhead
        self._busy = busy
        self._nice = nice
        self.min_work = min_work
        self.work = 0.0
        """What a seek may decode, in 1080p frames (known once the builder has looked)."""
        self.stats = BuildStats()
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start building."""
        self._thread.start()

    def stop(self) -> None:
        """Stop building and wait for the thread (at most one picture's work). Blocks: call
        it from a thread. Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def wait_done(self, timeout: float) -> bool:
        """Wait (blocking) until nothing is left to build; True when so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.status in ("done", "full", "failed", "stopped", "skipped"):
                return self.stats.status != "failed"
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        except OSError as exc:  # not allowed here: build at normal priority
            log.info("proxy builder keeps its priority: %s", exc)
        wall, cpu = time.monotonic(), time.thread_time()
        reader: VideoReader | None = None
        try:
            reader = self._open_reader()
            if self._needed(reader):
                reader.converter.width, reader.converter.height = self.size
                self._loop(reader)
            else:
                self.stats.status = "skipped"
        except Exception as exc:  # noqa: BLE001 - a proxy is an optimisation: log, seek without
            self.error = str(exc)
            self.stats.status = "failed"
            log.warning("the seek proxy cannot be built: %s", exc, exc_info=True)
        finally:
            if reader is not None:
                reader.close()
            self.stats.cpu_seconds = time.thread_time() - cpu
            self.stats.wall_seconds = time.monotonic() - wall
            if self.stats.status not in ("failed",):
                self.stats.status = "stopped" if self._stop.is_set() else self.stats.status

    def _needed(self, reader: VideoReader) -> bool:
        if self.min_work <= 0:
            return True
        gop = reader.longest_gop(max(2, math.ceil(reader.rate * SCAN_SECONDS)))
        pixels = reader.source_width * reader.source_height
        self.work = gop * pixels / (1920 * 1080)
        log.info("seek proxy: GOPs up to %d frames, %.0f 1080p frames a seek", gop, self.work)
        return self.work > self.min_work

    def _loop(self, reader: VideoReader) -> None:
        encoder = jpeg_encoder(*self.size)
        previous: int | None = None
        estimate = 0
        wall, cpu = time.monotonic(), time.thread_time()
        while not self._stop.is_set():
            self.stats.cpu_seconds = time.thread_time() - cpu
            self.stats.wall_seconds = time.monotonic() - wall
            if self._busy():
                self.stats.status = "playing"
                self._stop.wait(IDLE_POLL)
                continue
            playhead = self._playhead() // self.per_chunk
            built = self.store.built()
            if len(built) == self.chunks:
                self.stats.status = "done"
                return
            step = proxyplan.next_step(
                built, self.chunks, playhead, previous, self.store.budget, estimate
            )
            if step.build is None:
                self.stats.status = "full"  # no room for the next chunk near the playhead
                self._stop.wait(IDLE_POLL)
                continue
            for chunk in step.evict:
                self.store.evict(chunk)
            self.stats.status = "building"
            made = self._chunk(reader, encoder, step.build)
            previous = step.build if made is not None else None
            if made is not None and made[0]:
                # Bytes per chunk, from what the chunks so far took (10 % margin).
                estimate = max(estimate, made[1] * self.per_chunk * 11 // (10 * made[0]))
            elif made is None:
                estimate = max(estimate, self.store.budget - self.store.bytes + 1)

    def _chunk(
        self, reader: VideoReader, encoder: av.VideoCodecContext, chunk: int
    ) -> tuple[int, int] | None:
        """Build ``chunk``; its (frames, bytes), or None when given up (the bound, a stop)."""
        start = chunk * self.per_chunk
        end = min(self.frame_count, start + self.per_chunk)
        writer = self.store.write_chunk(chunk)
        frames = 0
        for n in range(start, end):
            if self._busy():
                while self._busy() and not self._stop.is_set():
                    self.stats.status = "playing"
                    self._stop.wait(IDLE_POLL)
                self.stats.status = "building"  # paused again: this chunk goes on
            if self._stop.is_set():
                writer.abandon()
                return None
            picture = reader.read(n)
            if picture is None:
                break  # the video ends before its nominal length
            writer.add(n, picture.pts, encode_jpeg(encoder, picture.data))
            frames += 1
            self.stats.frames += 1
            if self.store.bytes > self.store.budget:
                writer.abandon()
                return None
        writer.finish()
        return frames, writer.size


class ProxyReader:
    """Proxy pictures of ``store`` at the output size ``size``; used from one thread (the
    session's proxy thread), except :meth:`has`."""

    def __init__(self, store: ProxyStore, size: tuple[int, int]) -> None:
        self.store = store
        self.width, self.height = size
        self._decoder = av.CodecContext.create("mjpeg", "r")
        self._decoder.thread_count = 1  # one packet in, its picture out: no frame threads
        self.reads = 0

    def has(self, frame: int) -> bool:
        """Whether the proxy has ``frame`` (from any thread)."""
        return self.store.has(frame)

    def read(self, n: int) -> Picture | None:
        """Frame ``n``'s proxy picture at the output size (``exact`` False), or None."""
        found = self.store.get(n)
        if found is None:
            return None
        data, pts = found
        try:
            frames = self._decoder.decode(av.Packet(data))
        except av.FFmpegError as exc:
            log.warning("proxy frame %d does not decode: %s", n, exc)
            return None
        if not frames:
            return None
        frame = frames[0]
        assert isinstance(frame, av.VideoFrame)
        if (frame.width, frame.height) != (self.width, self.height):
            # The same format: scaled, with no range or matrix conversion.
            frame = frame.reformat(width=self.width, height=self.height)
        self.reads += 1
        pixels = np.asarray(frame.to_ndarray(), dtype=np.uint8)
        return Picture(frame=n, pts=pts, data=pixels, exact=False)

    def close(self) -> None:
        """Nothing to release but the decoder; the store is the worker's."""


SWEEP_AFTER = 300.0
"""Seconds a proxy folder must have been left alone (its newest change) before a sweep may
remove it: a folder being written is never that old, and a session just requested may not be
in the projected state yet."""


SESSION_FOLDER = re.compile(r"[0-9a-f]{32}")
"""A session's proxy folder is named for the session, whose id is 32 hex digits (the gateway's
``uuid4().hex``): nothing else under the proxy root is swept."""


def stale_proxies(root: Path, own: str, now: float, after: float = SWEEP_AFTER) -> list[Path]:
    """The folders under ``root`` other than ``own``'s that nothing changed for ``after`` s:
    candidates for :func:`sweep` (which asks whether their sessions still run)."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    stale = []
    for entry in entries:
        if entry.name == own or not SESSION_FOLDER.fullmatch(entry.name):
            continue  # not another session's proxy (lost+found on a mounted disk, say)
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            newest = max(
                [entry.stat(follow_symlinks=False).st_mtime]
                + [f.stat().st_mtime for f in os.scandir(entry.path) if f.is_file()]
            )
        except OSError:
            continue  # removed meanwhile
        if now - newest >= after:
            stale.append(Path(entry.path))
    return stale


def sweep(folders: list[Path], running: set[str]) -> list[Path]:
    """Remove the folders whose session (their name) is not ``running``: what a session left
    when its worker died and was never started again. The folders removed."""
    removed = []
    for folder in folders:
        if folder.name in running:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed
