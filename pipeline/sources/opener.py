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

HLS master playlists: given ``fit`` (the tile size), :func:`open_input` reads an http(s) URL's
playlist itself and, when it is a master, opens the one variant that
:func:`~pipeline.sources.renditions.choose` picks for the tile, by its media playlist URL, so
FFmpeg fetches that variant's segments and nothing of the others. The master and the variant's
playlist are fetched through the same :class:`~pipeline.sources.webio.WebIO` (the variant may be
on another host: it is checked like any other address), and what was read is handed to FFmpeg
rather than fetched again (:class:`_Handover`), so a source that is not a master costs the same
requests as without ``fit``. A master is recognised as WebIO recognises a playlist (an
``mpegurl`` Content-Type or a path ending in ``.m3u8``) that has ``#EXT-X-STREAM-INF``; one
served otherwise, or one the ``m3u8`` library cannot read, is left to FFmpeg as before.

Errors: :class:`~pipeline.sources.policy.SourceError` and its kinds (refused, unavailable).
"""

from __future__ import annotations

import functools
import io
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import av
import av.codec
import av.container

from pipeline.sources.policy import (
    Resolver,
    SourceError,
    SourcePolicy,
    SourceRefused,
    SourceUnavailable,
    redact,
)
from pipeline.sources.renditions import (
    MasterPlaylistError,
    Variant,
    choose,
    is_master,
    parse_master,
)
from pipeline.sources.webio import MAX_PLAYLIST_BYTES, Body, WebIO

log = logging.getLogger("tessera.sources")

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
    fit: tuple[int, int] | None = None,
    chosen: Callable[[str], None] | None = None,
    offered: Callable[[list[Variant]], None] | None = None,
) -> av.container.InputContainer:
    """Check ``url`` against ``policy`` and open it with PyAV; it has at least a video stream.

    http(s) goes through :class:`~pipeline.sources.webio.WebIO` (every open FFmpeg makes,
    redirects and playlist entries included, is checked on the address it connects to);
    ``cancelled`` ends its reads early (the owner is stopping).

    ``fit``: the ``(width, height)`` the pictures are scaled to. Given, an http(s) HLS master
    playlist is opened as the one variant chosen for that size (module docstring), and
    ``chosen`` is told which (:meth:`Variant.describe
    <pipeline.sources.renditions.Variant.describe>`), or ``""`` when the URL is not a master;
    ``offered`` is told the master's variants (:func:`rendition_for` gives the choice for
    another size: whether a grabber given other tiles needs another variant). None: FFmpeg
    opens the URL as it is (a master: FFmpeg's choice, all variants fetched).

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
    handover: _Handover | None = None
    opened = url
    if target.scheme in _WEB:
        web = WebIO(
            policy,
            open_timeout=open_timeout,
            read_timeout=read_timeout,
            resolve=resolve,
            cancelled=cancelled,
        )
        extra["io_open"] = web.io_open
        if fit is not None:
            handover = _pick_rendition(
                web, url, fit, chosen or (lambda rendition: None), offered or (lambda _: None)
            )
            opened = handover.url
            extra["io_open"] = handover.io_open
        # HLS keep-alive reuses FFmpeg's own HTTP connection object, which custom I/O has not
        # got (FFmpeg asserts on it): one request per connection.
        options["http_persistent"] = "0"
    try:
        container: av.container.InputContainer = av.open(
            opened,
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
    finally:
        if handover is not None:
            handover.close()
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


# -- HLS master playlists -----------------------------------------------------------------------


class _Handover:
    """FFmpeg's ``io_open`` for one open: FFmpeg's first open of :attr:`url` gets ``body``, what
    was already fetched of it, instead of a second request; every other open goes to ``web``."""

    def __init__(self, web: WebIO, url: str, body: io.IOBase) -> None:
        self.url = url
        self._web = web
        self._body: io.IOBase | None = body

    def io_open(self, url: str, flags: int, options: dict[str, Any]) -> io.IOBase:
        body, self._body = self._body, None
        if body is not None:
            if url == self.url:
                return body
            body.close()  # not what FFmpeg asked for first (never seen): fetch it anew
        return self._web.io_open(url, flags, options)

    def close(self) -> None:
        """Close the body if FFmpeg never took it (the open failed before)."""
        body, self._body = self._body, None
        if body is not None:
            body.close()


def rendition_for(variants: list[Variant], fit: tuple[int, int]) -> str:
    """The variant :func:`open_input` would choose of ``variants`` for tiles of ``fit``
    (described as ``chosen`` is told); "" when none can be decoded."""
    try:
        return choose(variants, *fit, can_decode=has_decoder).describe()
    except MasterPlaylistError:
        return ""


@functools.cache
def has_decoder(name: str) -> bool:
    """Whether this FFmpeg has the decoder ``name`` (e.g. ``h264``, ``libdav1d``)."""
    try:
        av.codec.Codec(name, "r")
    except ValueError:  # UnknownCodecError
        return False
    return True


def _read_playlist(body: Body, deadline: float) -> str:
    """All of a playlist ``body`` as text: at most :data:`MAX_PLAYLIST_BYTES`, read by
    ``deadline`` (monotonic; a body that keeps just above WebIO's stall rate ends there)."""
    chunks: list[bytes] = []
    size = 0
    with body:
        while data := body.read(1 << 16):
            chunks.append(data)
            size += len(data)
            if size > MAX_PLAYLIST_BYTES:
                raise SourceRefused(body.url, f"playlist larger than {MAX_PLAYLIST_BYTES} bytes")
            if time.monotonic() > deadline:
                raise SourceUnavailable(body.url, "playlist not read within the open timeout")
    return b"".join(chunks).decode("utf-8", errors="replace")


def _pick_rendition(
    web: WebIO,
    url: str,
    fit: tuple[int, int],
    chosen: Callable[[str], None],
    offered: Callable[[list[Variant]], None],
) -> _Handover:
    """What to open for ``url`` (a tile of ``fit``): the URL itself, or the chosen variant of a
    master playlist, with what was fetched of it to hand to FFmpeg. Raises :class:`SourceError`.
    """
    body = web.open(url)
    if not body.is_playlist:
        # A file or a stream (by its type and path): FFmpeg reads it from this very response.
        chosen("")
        return _Handover(web, url, body)
    text = _read_playlist(body, time.monotonic() + web.open_timeout)
    if not is_master(text):
        chosen("")
        return _Handover(web, url, io.BytesIO(text.encode()))
    try:
        # Relative variant URIs are relative to where the master really is (after redirects).
        variants = parse_master(text, body.url)
    except MasterPlaylistError as exc:
        # FFmpeg reads some masters m3u8 does not (no BANDWIDTH): let it choose, as without fit.
        log.warning("%s: %s; FFmpeg chooses the variant", redact(url), exc.args[0])
        chosen("FFmpeg's choice (master playlist not understood)")
        return _Handover(web, url, io.BytesIO(text.encode()))
    try:
        variant = choose(variants, *fit, can_decode=has_decoder)
    except MasterPlaylistError as exc:
        raise SourceUnavailable(url, exc.args[0]) from exc
    rendition = variant.describe()
    chosen(rendition)
    offered(variants)
    log.debug("%s: variant %s for a %dx%d tile", redact(url), rendition, *fit)
    try:
        media = web.open(variant.uri)
    except SourceRefused as exc:
        reason = f"{exc.reason} (the {rendition} variant of {redact(url)})"
        raise SourceRefused(variant.uri, reason) from exc
    media_text = _read_playlist(media, time.monotonic() + web.open_timeout)
    if is_master(media_text):
        raise SourceUnavailable(variant.uri, f"a variant of {redact(url)} is a master playlist")
    # FFmpeg resolves the segments against the URL it opens: where the playlist really is.
    return _Handover(web, media.url, io.BytesIO(media_text.encode()))
