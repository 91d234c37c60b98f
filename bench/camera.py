"""A low-latency live camera on loopback: ``GET /<name>.ts`` streams MPEG-TS made on the fly,
like an IP camera's HTTP stream, one frame at a time in real time.

Each picture is a :class:`~pipeline.sources.synthetic.LiveHlsSource` picture (a colour with a moving
square) with its capture time stamped in, *turned upside down* so the stamp bar is at the top:
a mosaic draws tile names over the bottom of every tile, where the stamp would be. Read it back
with ``read_stamp(np.flipud(luma))``. H.264 (x264 ultrafast, zero latency, 1 s GOP), every
packet flushed to the socket at once, no muxing delay: what leaves the camera is at most a frame
behind the clock.

Unlike a live HLS source (whose packager holds a whole segment, and whose player starts a few
segments back), this one leaves glass-to-glass figures to what Tessera does.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from pipeline.sources.synthetic import RGB, LiveHlsSource


class _Writer:
    """A file-like sink for PyAV that sends to the socket (and notices a closed connection)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].strip("/")
        camera = self.server.cameras.get(name.removesuffix(".ts"))
        if camera is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()
        self.server.connections += 1
        try:
            self.server.stream(camera, self.connection)
        except (OSError, av.FFmpegError):
            pass  # the grabber went away (PyAV reports it as an error in its write callback)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, cameras: dict[str, RGB], size: tuple[int, int], fps: int) -> None:
        self.cameras = cameras
        self.size = size
        self.fps = fps
        self.stopping = threading.Event()
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def stream(self, colour: RGB, sock: socket.socket) -> None:
        width, height = self.size
        source = LiveHlsSource(colour, width=width, height=height, fps=self.fps, stamp=True)
        rate = Fraction(self.fps)
        sock.settimeout(5.0)
        options = {"flush_packets": "1", "max_delay": "0"}
        with av.open(_Writer(sock), "w", format="mpegts", options=options) as out:
            stream = out.add_stream("libx264", rate=rate)
            ctx = stream.codec_context
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
            ctx.time_base = 1 / rate
            ctx.thread_count = 1
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "x264-params": f"keyint={self.fps}:min-keyint={self.fps}:scenecut=0",
            }
            began = time.monotonic()
            index = 0
            while not self.stopping.is_set():
                delay = began + index / self.fps - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    break
                flat = source.render(index, time.time())
                y = flat[: width * height].reshape(height, width)
                u = flat[width * height : width * height * 5 // 4].reshape(height // 2, width // 2)
                v = flat[width * height * 5 // 4 :].reshape(height // 2, width // 2)
                upside_down = np.concatenate(
                    [np.flipud(y).ravel(), np.flipud(u).ravel(), np.flipud(v).ravel()]
                ).reshape(height * 3 // 2, width)
                frame = av.VideoFrame.from_ndarray(upside_down, format="yuv420p")
                frame.pts = index
                frame.time_base = ctx.time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
                index += 1


class CameraServer:
    """Live MPEG-TS cameras on 127.0.0.1: ``with CameraServer({"red": (220, 30, 30)}) as s:``,
    ``s.url("red")``. ``stop()`` ends every stream and joins the server thread."""

    def __init__(self, cameras: dict[str, RGB], size: tuple[int, int] = (640, 360), fps: int = 25):
        self._server = _Server(dict(cameras), size, fps)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.ts"

    def __enter__(self) -> CameraServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="camera-server"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving; streams end within a frame (their sockets time out at worst)."""
        self._server.stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._server.shutdown()
            thread.join()
        self._server.server_close()
