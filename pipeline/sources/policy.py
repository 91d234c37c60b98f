"""Where a user-given media URL may point: the source policy, pure but for DNS.

A mosaic URL comes from whoever calls ``/create``, and FFmpeg will open almost anything: local
files, generated media, playlists that point at local files, and any host the machine can reach,
cloud metadata endpoints included. :class:`SourcePolicy` is a scheme allow-list and a check of
every address the host name resolves to, by address class. Loopback and private (LAN) addresses
are allowed only when the deployment says so (a local install watching LAN cameras allows both, a
public one neither); link-local, cloud metadata, CGNAT, unspecified, multicast and reserved
addresses are always refused unless an operator allow-lists a CIDR that holds them.
:mod:`pipeline.sources.opener` opens what the policy allows; :mod:`pipeline.sources.webio` checks
every HTTP hop with it.

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

from pipeline.config.settings import Config
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
