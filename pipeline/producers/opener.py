"""Opening user-given media URLs safely: where a URL may point, and how FFmpeg may open it.

A mosaic URL comes from whoever calls ``/create``, and FFmpeg will open almost anything: local
files (``file:``, ``concat:``, ``subfile:``, ``pipe:``), generated media (``lavfi``), playlists
that point at local files, and any host the machine can reach, cloud metadata endpoints
included. Two layers keep a grabber to what it is for:

- :class:`SourcePolicy` (pure): a scheme allow-list and a check of every address the host name
  resolves to, by address class. Loopback and private (LAN) addresses are allowed only when the
  deployment says so (a local install watching LAN cameras allows both, a public one neither);
  link-local, cloud metadata, CGNAT, unspecified, multicast and reserved addresses are always
  refused unless an operator allow-lists a CIDR that holds them.
- :func:`open_input`: resolves and checks in the calling (worker) thread, then opens with
  FFmpeg's ``protocol_whitelist`` and ``format_whitelist`` (both inherited by nested opens such
  as HLS segments, so a playlist cannot reach ``file:`` or the ``concat`` demuxer), open and
  read timeouts, bounded probing and a decoded picture size limit.

http(s) is fetched by :mod:`pipeline.producers.webio` rather than FFmpeg's own client, so HTTP
redirects, playlist entries on other hosts and DNS rebinding are checked too. RTSP and RTMP
are connected by FFmpeg after our check: a DNS answer that changes in between, or an RTSP
redirect, is not re-checked (the protocol allow-list still applies).

Errors (all :class:`~pipeline.errors.TesseraError`, one line naming the URL with any password
removed):

- :class:`SourceError`: a source that cannot be used.
  - :class:`SourceRefused`: the policy refuses the URL (scheme, malformed URL, an address
    class). Retrying does not help until the URL or the policy changes.
  - :class:`SourceUnavailable`: it could not be resolved, opened or read (refused connection,
    HTTP error, timeout, no video, bad data). Retrying may help.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import av
import av.container

from pipeline.config import Config
from pipeline.errors import TesseraError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class SourceError(TesseraError):
    """A media source cannot be used; ``url`` has any password removed."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(f"{self.url}: {reason}")


class SourceRefused(SourceError):
    """The source policy refuses the URL: a scheme or an address it must not reach."""


class SourceUnavailable(SourceError):
    """The source could not be resolved, opened or read."""


# -- the policy (pure) --------------------------------------------------------------------------

DEFAULT_SCHEMES = frozenset({"http", "https", "rtmp", "rtmps", "rtsp"})

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

_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def redact(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return parts._replace(netloc=f"{name}:***@{host}").geturl()


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), else None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_class(ip: IPAddress) -> str:
    """What kind of address ``ip`` is: ``public``, ``loopback``, ``private``, ``link-local``,
    ``cloud metadata``, ``CGNAT``, ``unspecified``, ``multicast`` or ``reserved``.

    An IPv6 address carrying an IPv4 one (mapped, 6to4, NAT64) is judged as that IPv4 address:
    ``::ffff:127.0.0.1`` is loopback.
    """
    inner = embedded_ipv4(ip)
    return _class_of(inner if inner is not None else ip)


def _class_of(ip: IPAddress) -> str:
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "CGNAT"
    if any(ip in net for net in _PRIVATE if net.version == ip.version):
        return "private"
    if not ip.is_global:
        # Documentation, benchmarking, "this network", 240/4, broadcast, ...: never a camera.
        return "reserved"
    return "public"


@dataclass(frozen=True)
class Target:
    """A URL that passed the pure checks: its scheme, host and port."""

    url: str
    scheme: str
    host: str
    port: int | None


@dataclass(frozen=True)
class SourcePolicy:
    """Where sources may point. Pure: :meth:`check_url` and :meth:`check_address` do no I/O;
    :meth:`check` also resolves the host name (call it from a worker thread)."""

    allow_private: bool = False
    """LAN addresses (10/8, 172.16/12, 192.168/16, fc00::/7): a local install allows them."""
    allow_loopback: bool = False
    """127/8 and ::1: a local install (and the tests) allow them."""
    allow_cidrs: tuple[IPNetwork, ...] = ()
    """Networks allowed whatever their class (an operator's explicit exception)."""
    schemes: frozenset[str] = field(default=DEFAULT_SCHEMES)
    """URL schemes allowed; never file, concat, subfile, data, pipe or lavfi."""

    @classmethod
    def for_config(cls, config: Config) -> SourcePolicy:
        """The policy a configuration implies: a local install (the gateway on loopback, not
        ``--public``) may watch LAN and loopback sources; anything else only public ones."""
        if config.binds_loopback and not config.public:
            return cls.local()
        return cls.public()

    @classmethod
    def local(cls, allow_cidrs: Iterable[str] = ()) -> SourcePolicy:
        """A local install: LAN cameras and loopback sources allowed."""
        return cls(True, True, parse_cidrs(allow_cidrs))

    @classmethod
    def public(cls, allow_cidrs: Iterable[str] = ()) -> SourcePolicy:
        """A public deployment: public addresses only (plus explicit CIDRs)."""
        return cls(False, False, parse_cidrs(allow_cidrs))

    def check_url(self, url: str) -> Target:
        """The parsed URL, or SourceRefused naming what is wrong with it."""
        if not url or len(url) > 4096:
            raise SourceRefused(url[:200], "not a usable URL (empty or longer than 4096 chars)")
        # Characters where URL parsers disagree (Python's and FFmpeg's) are refused outright, so
        # the host we check is the host FFmpeg connects to.
        if any(c.isspace() or c == "\\" or not c.isprintable() or ord(c) > 126 for c in url):
            raise SourceRefused(url, "white space, backslashes and non-ASCII are not allowed")
        try:
            parts: SplitResult = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise SourceRefused(url, f"malformed URL ({exc})") from exc
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            allowed = ", ".join(sorted(self.schemes))
            raise SourceRefused(url, f"scheme {scheme or '(none)'!r} not allowed (use {allowed})")
        if parts.netloc.count("@") > 1:
            raise SourceRefused(url, "more than one '@' in the host part")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise SourceRefused(url, "no host name")
        if "%" in host:
            raise SourceRefused(url, "scoped IPv6 addresses (with %zone) are not allowed")
        target = Target(url=url, scheme=scheme, host=host, port=port)
        literal = _ip_literal(host)
        if literal is not None:
            self.check_address(literal, target)
        return target

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be reached (its class), or None when it may."""
        inner = embedded_ipv4(ip)
        if any(a in net for net in self.allow_cidrs for a in (ip, inner) if a is not None):
            return None
        kind = address_class(ip)
        if kind == "public":
            return None
        if kind == "loopback" and self.allow_loopback:
            return None
        if kind == "private" and self.allow_private:
            return None
        return kind

    def check_address(self, ip: IPAddress, target: Target) -> None:
        """SourceRefused unless ``ip`` (an address ``target``'s host has) may be reached."""
        kind = self.refusal(ip)
        if kind is None:
            return
        shown = target.host if target.host == str(ip) else f"{target.host} ({ip})"
        hint = ""
        if kind in ("loopback", "private"):
            hint = f"; allow {kind} sources in a local install"
        raise SourceRefused(target.url, f"{shown} is a {kind} address, refused by policy{hint}")

    def check(self, url: str, *, resolve: Resolver = socket.getaddrinfo) -> Target:
        """:meth:`check_url`, then resolve the host and check every address it has.

        Blocking (DNS): call from the thread that will open the URL.
        """
        return self.checked_addresses(url, resolve=resolve)[0]

    def checked_addresses(
        self, url: str, *, resolve: Resolver = socket.getaddrinfo
    ) -> tuple[Target, list[IPAddress]]:
        """:meth:`check`, with the addresses that passed: connect to these and nothing else
        (a later DNS answer may differ: rebinding)."""
        target = self.check_url(url)
        literal = _ip_literal(target.host)
        if literal is not None:
            return target, [literal]
        try:
            infos = resolve(target.host, target.port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SourceUnavailable(url, f"cannot resolve {target.host}: {reason}") from exc
        addresses = {_ip_literal(str(info[4][0])) for info in infos}
        if not addresses or None in addresses:
            raise SourceUnavailable(url, f"{target.host} resolves to no usable address")
        checked = sorted((a for a in addresses if a is not None), key=str)
        for ip in checked:
            self.check_address(ip, target)
        return target, checked


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from text such as ``"10.1.2.0/24"``; ValueError names a bad one."""
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a CIDR network such as 10.1.2.0/24") from exc
    return tuple(networks)


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

    http(s) goes through :class:`~pipeline.producers.webio.WebIO` (every open FFmpeg makes,
    redirects and playlist entries included, is checked on the address it connects to);
    ``cancelled`` ends its reads early (the owner is stopping).

    Blocking (DNS, connect, probing): call from a worker thread. ``open_timeout`` bounds the
    open and the stream probing; ``read_timeout`` bounds each later read. The caller closes the
    container (``with``). Raises :class:`SourceRefused` or :class:`SourceUnavailable`.
    """
    from pipeline.producers.webio import WebIO  # it builds on this module

    target = policy.check(url, resolve=resolve)
    options = ffmpeg_options(
        target.scheme, policy, open_timeout=open_timeout, read_timeout=read_timeout
    )
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
