"""Opening user-given media URLs safely: where a URL may point, and how FFmpeg may open it.

A mosaic URL comes from whoever calls ``/create``, and FFmpeg will open almost anything: local
files (``file:``, ``concat:``, ``subfile:``, ``pipe:``), generated media (``lavfi``), playlists
that point at local files, and any host the machine can reach, cloud metadata endpoints
included. Two layers keep a grabber to what it is for:

- :class:`~pipeline.sources.policy.SourcePolicy` (pure): a scheme allow-list and a check of every
  address the host name resolves to, by address class. Loopback and private (LAN) addresses are
  allowed only when the deployment says so (a local install watching LAN cameras allows both, a
  public one neither); link-local, cloud metadata, CGNAT, unspecified, multicast and reserved
  addresses are always refused unless an operator allow-lists a CIDR that holds them.
- :func:`open_input`: resolves and checks in the calling (worker) thread, then opens with
  FFmpeg's ``protocol_whitelist`` and ``format_whitelist`` (both inherited by nested opens such
  as HLS segments, so a playlist cannot reach ``file:`` or the ``concat`` demuxer), open and
  read timeouts, bounded probing and a decoded picture size limit.

http(s) is fetched by :mod:`pipeline.sources.webio` rather than FFmpeg's own client, so HTTP
redirects, playlist entries on other hosts and DNS rebinding are checked too. RTSP and RTMP
are connected by FFmpeg after our check: a DNS answer that changes in between, or an RTSP
redirect, is not re-checked (the protocol allow-list still applies).

Errors: :class:`~pipeline.sources.policy.SourceError` and its kinds (refused, unavailable).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import av
import av.container

from pipeline.sources.policy import (
    Resolver,
    SourceError,
    SourcePolicy,
    SourceRefused,
    SourceUnavailable,
)
from pipeline.sources.webio import WebIO

# FFmpeg protocols a URL of each scheme needs underneath it (HLS over http(s) also gets the other
# web scheme when the policy allows it: playlists often mix them). `crypto` (AES-128 encrypted
# HLS) is deliberately absent: no source we watch needs it, and it can wrap any inner protocol.
_INNER_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "http": ("http", "tcp"),
    "https": ("https", "tls", "tcp"),
    "rtmp": ("rtmp", "tcp"),
    "rtmps": ("rtmps", "tls", "tcp"),
    # RTSP carries media in RTP, over UDP or interleaved in the TCP control connection.
    "rtsp": ("rtsp", "rtp", "udp", "tcp"),
}
_WEB = ("http", "https")

# Demuxers a source may be probed as (a name matches any of FFmpeg's comma-separated aliases, so
# "mov" covers mp4/m4a/3gp and "matroska" covers webm). Nested opens inherit this list, so it
# includes what HLS segments and renditions use. Absent on purpose: concat, sdp, rtp, image2,
# lavfi, and the other demuxers that open further URLs or local files by themselves.
FORMAT_WHITELIST = (
    "hls,mpegts,mov,flv,live_flv,matroska,rtsp,h264,hevc,mjpeg,mpjpeg,aac,mp3,ac3,eac3,webvtt"
)

MAX_STREAMS = 32
"""Most streams a source may have (a camera has one or two; a file of 1000 is an attack)."""

MAX_PIXELS = 4096 * 2160
"""Largest decoded picture accepted (DCI 4K): a bigger one is refused, not decoded."""

PROBE_SIZE = 2_000_000
"""Bytes FFmpeg may read to find the streams (default 5 MB): a live source opens sooner."""
ANALYZE_DURATION = 2.0
"""Seconds of media FFmpeg may read to find the streams (default 5 s)."""

# -- opening ------------------------------------------------------------------------------------


def protocol_whitelist(scheme: str, policy: SourcePolicy) -> str:
    """FFmpeg's ``protocol_whitelist`` for a URL of ``scheme`` under ``policy``."""
    schemes = [scheme]
    if scheme in _WEB:
        schemes += [s for s in _WEB if s != scheme and s in policy.schemes]
    names: list[str] = []
    for name in schemes:
        for protocol in _INNER_PROTOCOLS.get(name, (name,)):
            if protocol not in names:
                names.append(protocol)
    return ",".join(names)


def ffmpeg_options(
    scheme: str, policy: SourcePolicy, *, open_timeout: float, read_timeout: float
) -> dict[str, str]:
    """Format and protocol options of an open (FFmpeg takes times in microseconds)."""
    io_timeout = str(round(max(open_timeout, read_timeout) * 1_000_000))
    options = {
        "protocol_whitelist": protocol_whitelist(scheme, policy),
        "format_whitelist": FORMAT_WHITELIST,
        "rw_timeout": io_timeout,
        "probesize": str(PROBE_SIZE),
        "analyzeduration": str(round(ANALYZE_DURATION * 1_000_000)),
        "user_agent": "Tessera grabber",
    }
    if scheme in ("http", "https", "rtsp"):
        # Socket I/O timeout there. NOT for rtmp, where `timeout` means "listen for a client".
        options["timeout"] = io_timeout
    if scheme == "rtsp":
        # TCP first (one connection, no UDP ports to open or lose behind NAT), UDP if refused.
        options["rtsp_flags"] = "prefer_tcp"
    return options


def describe(exc: BaseException, *, timeout: str = "timed out") -> str:
    """A one-line reason for a PyAV/FFmpeg failure; ``timeout`` says what a timeout means."""
    if isinstance(exc, av.ExitError):
        # PyAV's interrupt callback ended a call that outlived its open or read timeout.
        return timeout
    if isinstance(exc, av.FFmpegError):
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, av.ArgumentError):
            reason += " (not an allowed media format, or an option FFmpeg rejects)"
        return reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def open_input(
    url: str,
    policy: SourcePolicy,
    *,
    open_timeout: float,
    read_timeout: float,
    resolve: Resolver = socket.getaddrinfo,
    cancelled: Callable[[], bool] = lambda: False,
) -> av.container.InputContainer:
    """Check ``url`` against ``policy`` and open it with PyAV; it has at least a video stream.

    http(s) goes through :class:`~pipeline.sources.webio.WebIO` (every open FFmpeg makes,
    redirects and playlist entries included, is checked on the address it connects to);
    ``cancelled`` ends its reads early (the owner is stopping).

    Blocking (DNS, connect, probing): call from a worker thread. ``open_timeout`` bounds the
    open and the stream probing; ``read_timeout`` bounds each later read. The caller closes the
    container (``with``). Raises :class:`SourceRefused` or :class:`SourceUnavailable`.
    """
    target = policy.check(url, resolve=resolve)
    options = ffmpeg_options(
        target.scheme, policy, open_timeout=open_timeout, read_timeout=read_timeout
    )
    # At open FFmpeg reads 20 frames to estimate the frame rate, which the grabber never uses
    # (it paces by timestamps): 0.8 s of a 25 fps live stream, which the pacing then keeps as
    # lag for the stream's whole life. 0: the open returns with the first frames.
    options["fpsprobesize"] = "0"
    extra: dict[str, Any] = {}
    web: WebIO | None = None
    if target.scheme in _WEB:
        web = WebIO(
            policy,
            open_timeout=open_timeout,
            read_timeout=read_timeout,
            resolve=resolve,
            cancelled=cancelled,
        )
        extra["io_open"] = web.io_open
        # HLS keep-alive reuses FFmpeg's own HTTP connection object, which custom I/O has not
        # got (FFmpeg asserts on it): one request per connection.
        options["http_persistent"] = "0"
    try:
        container: av.container.InputContainer = av.open(
            url,
            mode="r",
            container_options=options,
            # Applied to the decoders FFmpeg opens while probing.
            options={"max_pixels": str(MAX_PIXELS)},
            timeout=(open_timeout, read_timeout),
            **extra,
        )
    except SourceError:
        raise  # from WebIO, through FFmpeg
    except av.FFmpegError as exc:
        if web is not None and web.refusals:
            raise web.refusals[-1] from exc
        reason = describe(exc, timeout=f"no answer within {open_timeout:g} s")
        raise SourceUnavailable(url, f"cannot open: {reason}") from exc
    if len(container.streams) > MAX_STREAMS:
        count = len(container.streams)
        container.close()
        raise SourceRefused(url, f"{count} streams (more than {MAX_STREAMS}): not a camera")
    if not container.streams.video:
        container.close()
        raise SourceUnavailable(url, "no video stream")
    ctx = container.streams.video[0].codec_context
    if ctx.width <= 0 or ctx.height <= 0:
        # FFmpeg found no usable picture size (a header it rejected, e.g. one claiming more
        # pixels than it will ever allocate): there is nothing to decode.
        container.close()
        raise SourceUnavailable(url, "video stream without a usable picture size")
    if ctx.width * ctx.height > MAX_PIXELS:
        container.close()
        reason = f"{ctx.width}x{ctx.height} pictures exceed the {MAX_PIXELS}-pixel limit"
        raise SourceRefused(url, reason)
    return container
