"""Live HLS test sources made with PyAV and served over loopback, for tests, demos and benchmarks.

A :class:`LiveHlsSource` is a fake camera: a solid colour with a small white square moving
horizontally (so motion is visible), optionally with its capture time stamped into the picture
(a row of black/white blocks, :func:`read_stamp`) for glass-to-glass latency measurements. A
background thread cuts ~1 s MPEG-TS segments (H.264, libx264 ultrafast/zerolatency, one GOP per
segment) in real time and keeps the last few in memory behind a live playlist whose media
sequence only grows.

A :class:`SourceServer` serves several sources, and plain files, from one HTTP server on
127.0.0.1 with a free port (and counts the requests per path: :meth:`SourceServer.requests`)::

    with SourceServer({"red": LiveHlsSource((255, 0, 0))}) as server:
        url = server.url("red")          # http://127.0.0.1:<port>/red/index.m3u8
        server.stop_source("red")        # 404 from now on, like a dead camera
        server.start_source("red")       # back, media sequence continuing upward

Everything runs in threads with a synchronous API, so it works the same from sync and async
tests; ``stop()`` joins every thread it started. Generation is cheap on purpose (the suite runs
on 2 cores): the background picture is rendered once, a frame is a copy plus two small fills,
and x264 at 320x180 ultrafast encodes a 25-frame segment in a few milliseconds.
"""

from __future__ import annotations

import collections
import http.server
import io
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from types import TracebackType
from typing import Any

import av
import m3u8
import numpy as np
import numpy.typing as npt

RGB = tuple[int, int, int]
Plane = npt.NDArray[np.uint8]

BLACK_Y = 16
WHITE_Y = 235
"""BT.601 limited ("TV") range: luma spans 16..235, chroma 16..240 around 128."""

STAMP_BITS = 32
"""Capture time in ms modulo 2**32 (~49.7 days): plenty to measure a latency of seconds."""
STAMP_CHECK_BITS = 8
STAMP_BLOCKS = STAMP_BITS + STAMP_CHECK_BITS

MAX_WIDTH, MAX_HEIGHT = 1920, 1080


def rgb_to_yuv601(rgb: RGB) -> tuple[int, int, int]:
    """``rgb`` (0..255) as BT.601 limited-range Y, Cb, Cr: what the source encodes."""
    r, g, b = (c / 255 for c in rgb)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def _stamp_check(value: int) -> int:
    # 0xA5: a flat picture (all blocks black, or all white) never passes the check.
    return (sum(value.to_bytes(4, "big")) ^ 0xA5) & 0xFF


def _stamp_blocks(width: int) -> list[tuple[int, int]]:
    """Column span of each stamp block: relative to the width, so it survives scaling."""
    return [
        (i * width // STAMP_BLOCKS, (i + 1) * width // STAMP_BLOCKS) for i in range(STAMP_BLOCKS)
    ]


def stamp_height(height: int) -> int:
    """Rows of the stamp bar at the bottom of a picture ``height`` rows tall (even)."""
    return max(8, height // 12) // 2 * 2


def read_stamp(luma: npt.NDArray[Any]) -> int | None:
    """The capture time (Unix ms modulo 2**32) stamped in a picture's luma, or None.

    ``luma`` is the picture area only (no letterbox bars), at any scale. None when the blocks do
    not carry a valid check byte (no stamp, or a picture too small to read).
    """
    height, width = luma.shape
    bar = stamp_height(height)
    if width < STAMP_BLOCKS * 2 or bar < 2:
        return None
    rows = luma[height - bar + bar // 4 : height - bar // 4]
    bits = 0
    for start, end in _stamp_blocks(width):
        level = float(rows[:, start + (end - start) // 4 : end - (end - start) // 4].mean())
        if BLACK_Y + 60 < level < WHITE_Y - 60:
            return None  # neither black nor white: not a stamp
        bits = (bits << 1) | int(level > (BLACK_Y + WHITE_Y) / 2)
    value, check = bits >> STAMP_CHECK_BITS, bits & 0xFF
    return value if _stamp_check(value) == check else None


class LiveHlsSource:
    """A fake live camera: a live HLS stream of a solid colour with a moving white square.

    ``color`` is RGB. Segments are ``segment_frames`` frames at ``fps`` (1 s by default, one GOP
    each); the newest ``window`` are kept and listed. On start, ``prefill`` segments are made at
    once (their capture times in the recent past) so a player can open the playlist right away.
    ``stamp``: put the capture time in the bottom rows (see :func:`read_stamp`).
    """

    def __init__(
        self,
        color: RGB,
        *,
        width: int = 320,
        height: int = 180,
        fps: int = 25,
        segment_frames: int | None = None,
        window: int = 6,
        prefill: int = 2,
        stamp: bool = False,
        name: str = "source",
    ) -> None:
        if width % 2 or height % 2 or not (16 <= width <= MAX_WIDTH and 16 <= height <= MAX_HEIGHT):
            raise ValueError(
                f"size {width}x{height}: use even sizes up to {MAX_WIDTH}x{MAX_HEIGHT}"
            )
        if not 1 <= fps <= 60:
            raise ValueError(f"fps {fps}: use 1..60")
        self.color = color
        self.yuv = rgb_to_yuv601(color)
        self.width = width
        self.height = height
        self.fps = fps
        self.segment_frames = segment_frames or fps
        self.segment_seconds = self.segment_frames / fps
        self.window = window
        self.prefill = max(1, min(prefill, window))
        self.stamp = stamp
        self.name = name
        self._lock = threading.Lock()
        self._segments: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=window)
        self._next_seq = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._first = threading.Event()
        self.errors: list[BaseException] = []
        self._render_background()

    # -- pictures -----------------------------------------------------------------------------

    def _render_background(self) -> None:
        w, h = self.width, self.height
        y, u, v = self.yuv
        self._background = np.empty(w * h * 3 // 2, dtype=np.uint8)
        self._background[: w * h] = y
        self._background[w * h : w * h * 5 // 4] = u
        self._background[w * h * 5 // 4 :] = v
        self._frame = self._background.copy()
        # The marker: a white square a tenth of the height, crossing the picture in ~2 s.
        self._marker = max(8, h // 10) // 2 * 2
        travel = max(2, w - self._marker)
        self._marker_step = max(2, travel // (2 * self.fps)) // 2 * 2
        self._marker_travel = travel

    def _planes(self, flat: Plane) -> tuple[Plane, Plane, Plane]:
        w, h = self.width, self.height
        y = flat[: w * h].reshape(h, w)
        u = flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
        v = flat[w * h * 5 // 4 :].reshape(h // 2, w // 2)
        return y, u, v

    def render(self, index: int, wall: float) -> Plane:
        """Frame ``index`` (captured at Unix time ``wall``) as a packed yuv420p buffer.

        The returned buffer is reused by the next call.
        """
        np.copyto(self._frame, self._background)
        y, u, v = self._planes(self._frame)
        size = self._marker
        x = (index * self._marker_step) % self._marker_travel // 2 * 2
        top = (self.height // 2 - size // 2) // 2 * 2
        y[top : top + size, x : x + size] = WHITE_Y
        u[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2] = 128
        v[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2] = 128
        if self.stamp:
            self._draw_stamp(y, u, v, int(wall * 1000) & 0xFFFFFFFF)
        return self._frame

    def _draw_stamp(self, y: Plane, u: Plane, v: Plane, millis: int) -> None:
        bar = stamp_height(self.height)
        bits = (millis << STAMP_CHECK_BITS) | _stamp_check(millis)
        u[(self.height - bar) // 2 :] = 128
        v[(self.height - bar) // 2 :] = 128
        for i, (start, end) in enumerate(_stamp_blocks(self.width)):
            bit = (bits >> (STAMP_BLOCKS - 1 - i)) & 1
            y[self.height - bar :, start:end] = WHITE_Y if bit else BLACK_Y

    # -- segments -----------------------------------------------------------------------------

    def encode_segment(self, seq: int, wall0: float) -> bytes:
        """Segment ``seq`` as MPEG-TS bytes; its first frame was captured at ``wall0``.

        Timestamps are absolute (frame ``seq * segment_frames + i``), so consecutive segments
        play as one continuous stream.
        """
        out_buf = io.BytesIO()
        rate = Fraction(self.fps)
        with av.open(out_buf, "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=rate)
            ctx = stream.codec_context
            ctx.width = self.width
            ctx.height = self.height
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = 1 / rate
            ctx.thread_count = 1
            ctx.color_range = 1  # MPEG (limited) range
            ctx.colorspace = 6  # SMPTE 170M, i.e. BT.601
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                # One GOP per segment: a player may start at any segment.
                "x264-params": f"keyint={self.segment_frames}:min-keyint="
                f"{self.segment_frames}:scenecut=0",
            }
            first = seq * self.segment_frames
            for i in range(self.segment_frames):
                pixels = self.render(first + i, wall0 + i / self.fps)
                frame = av.VideoFrame.from_ndarray(
                    pixels.reshape(self.height * 3 // 2, self.width), format="yuv420p"
                )
                frame.pts = first + i
                frame.time_base = ctx.time_base
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return out_buf.getvalue()

    def start(self, timeout: float = 10.0) -> None:
        """Start producing (again), continuing the media sequence; wait for a first segment."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._first.clear()
        with self._lock:
            self._segments.clear()
        # Daemon: a forced exit (a second Ctrl-C in `tessera demo`) must not hang on a camera;
        # stop() still ends and joins it on the graceful path.
        self._thread = threading.Thread(
            target=self._run, name=f"hls-source-{self.name}", daemon=True
        )
        self._thread.start()
        if not self._first.wait(timeout):
            raise TimeoutError(f"source {self.name} made no segment within {timeout} s")
        if self.errors:
            self.stop()
            raise RuntimeError(f"source {self.name} failed: {self.errors[-1]!r}")

    def stop(self) -> None:
        """Stop producing and forget the segments (a dead camera). Safe to call twice."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()
        with self._lock:
            self._segments.clear()

    @property
    def running(self) -> bool:
        """True while segments are being produced."""
        return self._thread is not None

    def _run(self) -> None:
        try:
            # Segment k of this run holds the frames captured in [t0 + k*D, t0 + (k+1)*D) and is
            # published at its end, like a real live packager. The first `prefill` segments lie
            # in the past, so they are published at once.
            d = self.segment_seconds
            mono0 = time.monotonic() - self.prefill * d
            wall0 = time.time() - self.prefill * d
            k = 0
            while True:
                delay = mono0 + (k + 1) * d - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if self._stop.is_set():
                    return
                with self._lock:
                    seq = self._next_seq
                    self._next_seq += 1
                data = self.encode_segment(seq, wall0 + k * d)
                with self._lock:
                    self._segments.append((seq, data))
                self._first.set()
                k += 1
        except BaseException as exc:  # kept for the test to see; a source must not die silently
            self.errors.append(exc)
            self._first.set()
            raise

    def playlist(self) -> str | None:
        """The live playlist text, or None when stopped or not started."""
        with self._lock:
            if self._thread is None or not self._segments:
                return None
            window = list(self._segments)
        playlist = m3u8.M3U8()
        playlist.version = 3
        playlist.target_duration = max(1, round(self.segment_seconds))
        playlist.media_sequence = window[0][0]
        for seq, _ in window:
            playlist.add_segment(m3u8.Segment(uri=f"{seq}.ts", duration=self.segment_seconds))
        text: str = playlist.dumps()
        return text

    def segment(self, seq: int) -> bytes | None:
        """The bytes of segment ``seq`` while it is in the window, else None."""
        with self._lock:
            if self._thread is None:
                return None
            for have, data in self._segments:
                if have == seq:
                    return data
        return None

    @property
    def media_sequence(self) -> int:
        """Sequence number of the oldest listed segment (-1 when none)."""
        with self._lock:
            return self._segments[0][0] if self._segments else -1


def make_clip(
    color: RGB,
    *,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 180,
    fps: int = 25,
    format: str = "mpegts",
    stamp: bool = False,
) -> bytes:
    """A short finished file (MPEG-TS, or MP4 with ``format="mp4"``) of a colour source."""
    source = LiveHlsSource(color, width=width, height=height, fps=fps, stamp=stamp)
    out_buf = io.BytesIO()
    rate = Fraction(fps)
    # Fragmented MP4: faststart would need a second pass over a named file, not a buffer.
    options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if format == "mp4" else {}
    with av.open(out_buf, "w", format=format, options=options) as out:
        stream = out.add_stream("libx264", rate=rate)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = 1 / rate
        ctx.thread_count = 1
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
        now = time.time()
        for i in range(round(seconds * fps)):
            pixels = source.render(i, now + i / fps)
            frame = av.VideoFrame.from_ndarray(
                pixels.reshape(height * 3 // 2, width), format="yuv420p"
            )
            frame.pts = i
            frame.time_base = ctx.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return out_buf.getvalue()


# -- HTTP ---------------------------------------------------------------------------------------

_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".mp4": "video/mp4"}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0  # a stuck client frees its worker after this many seconds

    def do_GET(self) -> None:
        self.server.owner._count(self.path)
        found = self.server.owner._lookup(self.path)
        if found is None:
            self.send_error(404)
            return
        body, content_type = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the player went away mid-segment (a grabber stopping): nothing to do

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests assert on content, not on access logs


class _Server(http.server.HTTPServer):
    """An HTTP/1.0 server whose requests run on a bounded pool (busy: the connection is closed)."""

    allow_reuse_address = True

    def __init__(self, owner: SourceServer, host: str, workers: int) -> None:
        self.owner = owner
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="source-http")
        self._slots = threading.BoundedSemaphore(workers)
        super().__init__((host, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # bounded: refuse rather than queue without limit
            return
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - like socketserver: one bad request never stops serving
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client dropping its connection is normal for a live server

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True)


class SourceServer:
    """One loopback HTTP server for several named live sources and static files.

    ``/<name>/index.m3u8`` and ``/<name>/<seq>.ts`` for sources; ``/files/<name>`` for files
    added with :meth:`add_file`. Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        sources: Mapping[str, LiveHlsSource] | None = None,
        *,
        host: str = "127.0.0.1",
        workers: int = 16,
    ) -> None:
        self.host = host
        self.workers = workers
        self._sources: dict[str, LiveHlsSource] = {}
        self._files: dict[str, tuple[bytes, str]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: collections.Counter[str] = collections.Counter()
        self._requests_lock = threading.Lock()
        for name, source in (sources or {}).items():
            self.add(name, source)

    def add(self, name: str, source: LiveHlsSource) -> LiveHlsSource:
        """Serve ``source`` under ``/<name>/`` (started now if the server runs)."""
        if "/" in name or name in self._sources or name == "files":
            raise ValueError(f"source name {name!r} is taken or not one path segment")
        source.name = name
        self._sources[name] = source
        if self._server is not None:
            source.start()
        return source

    def add_file(self, name: str, data: bytes | str, content_type: str = "") -> str:
        """Serve fixed content at ``/files/<name>``; return its URL once started."""
        body = data.encode() if isinstance(data, str) else data
        suffix = name[name.rfind(".") :] if "." in name else ""
        self._files[name] = (body, content_type or _TYPES.get(suffix, "application/octet-stream"))
        return self.file_url(name) if self._server is not None else ""

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            raise RuntimeError("the source server is not running")
        return int(self._server.server_address[1])

    def url(self, name: str) -> str:
        """Playlist URL of source ``name``."""
        if name not in self._sources:
            raise KeyError(f"no source {name!r}")
        return f"http://{self.host}:{self.port}/{name}/index.m3u8"

    def file_url(self, name: str) -> str:
        """URL of a file added with :meth:`add_file`."""
        return f"http://{self.host}:{self.port}/files/{name}"

    def source(self, name: str) -> LiveHlsSource:
        """The source served as ``name``."""
        return self._sources[name]

    def start(self) -> SourceServer:
        """Start the HTTP server and every source. Safe to call twice."""
        if self._server is not None:
            return self
        self._server = _Server(self, self.host, self.workers)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="source-server",
            daemon=True,  # as the cameras: a forced exit does not wait for it
        )
        self._thread.start()
        for source in self._sources.values():
            source.start()
        return self

    def stop(self) -> None:
        """Stop every source and the server; join their threads. Safe to call twice."""
        for source in self._sources.values():
            source.stop()
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def stop_source(self, name: str) -> None:
        """Kill source ``name``: it stops producing and its URLs answer 404."""
        self._sources[name].stop()

    def start_source(self, name: str) -> None:
        """Bring source ``name`` back; its media sequence continues upward."""
        self._sources[name].start()

    def requests(self) -> dict[str, int]:
        """GET requests so far per path (without the query), found or not."""
        with self._requests_lock:
            return dict(self._requests)

    def _count(self, path: str) -> None:
        with self._requests_lock:
            self._requests[path.split("?", 1)[0]] += 1

    def _lookup(self, path: str) -> tuple[bytes, str] | None:
        path = path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if len(parts) != 2:
            return None
        name, leaf = parts
        if name == "files":
            return self._files.get(leaf)
        source = self._sources.get(name)
        if source is None:
            return None
        if leaf == "index.m3u8":
            text = source.playlist()
            return None if text is None else (text.encode(), _TYPES[".m3u8"])
        if leaf.endswith(".ts") and leaf[:-3].isdigit():
            data = source.segment(int(leaf[:-3]))
            return None if data is None else (data, _TYPES[".ts"])
        return None

    def __enter__(self) -> SourceServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def refused_url(path: str = "/live/index.m3u8") -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
