"""Opening user URLs: the pure source policy (schemes, address classes), and real opens with
PyAV of what the loopback source server serves, including hostile playlists."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.settings import load
from pipeline.sources.opener import FORMAT_WHITELIST, ffmpeg_options, open_input, protocol_whitelist
from pipeline.sources.policy import (
    SourceError,
    SourcePolicy,
    SourceRefused,
    SourceUnavailable,
    address_class,
    parse_cidrs,
    redact,
)
from pipeline.sources.synthetic import LiveHlsSource, SourceServer, refused_url

PUBLIC = SourcePolicy.public()
LOCAL = SourcePolicy.local()


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# -- address classes (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", "public"),
        ("2606:4700:4700::1111", "public"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.20", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("192.0.2.10", "reserved"),  # documentation
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_address_class(address: str, kind: str) -> None:
    assert address_class(ip(address)) == kind


@pytest.mark.parametrize(
    ("address", "public", "local"),
    [
        ("8.8.8.8", True, True),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("192.168.1.20", False, True),
        ("fd12::1", False, True),
        ("169.254.169.254", False, False),
        ("fd00:ec2::254", False, False),  # in fc00::/7, yet never allowed as "private"
        ("169.254.1.1", False, False),
        ("100.64.0.1", False, False),
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
    ],
)
def test_policies_by_address_class(address: str, public: bool, local: bool) -> None:
    assert (PUBLIC.refusal(ip(address)) is None) is public
    assert (LOCAL.refusal(ip(address)) is None) is local


def test_allow_listed_cidrs_override_the_class() -> None:
    policy = SourcePolicy.public(allow_cidrs=["100.64.5.0/24", "169.254.7.7/32"])
    assert policy.refusal(ip("100.64.5.9")) is None
    assert policy.refusal(ip("169.254.7.7")) is None
    assert policy.refusal(ip("100.64.6.1")) == "CGNAT"
    assert policy.refusal(ip("169.254.169.254")) == "cloud metadata"
    with pytest.raises(ValueError, match="not a CIDR"):
        parse_cidrs(["10.0.0.0/33"])


@given(st.ip_addresses(v=4))
def test_public_policy_allows_exactly_global_unicast(address: ipaddress.IPv4Address) -> None:
    allowed = PUBLIC.refusal(address) is None
    assert allowed == (address.is_global and not address.is_multicast)
    if allowed:
        assert LOCAL.refusal(address) is None


@given(st.ip_addresses(v=6))
def test_local_policy_never_allows_link_local_or_metadata(
    address: ipaddress.IPv6Address,
) -> None:
    if address_class(address) in ("link-local", "cloud metadata", "unspecified", "multicast"):
        assert LOCAL.refusal(address) is not None


def test_policy_for_config() -> None:
    assert SourcePolicy.for_config(load(env={})) == SourcePolicy.local()
    assert SourcePolicy.for_config(load(env={"TESSERA_PUBLIC": "1"})) == SourcePolicy.public()
    assert SourcePolicy.for_config(load(env={"JIT_ORCHESTRATOR_HOST": "0.0.0.0"})) == (
        SourcePolicy.public()
    )


# -- URLs (pure) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "concat:/etc/passwd|/etc/hosts",
        "subfile,,start,0,end,10,,:/etc/passwd",
        "data:text/plain;base64,aGVsbG8=",
        "pipe:0",
        "lavfi:testsrc",
        "/etc/passwd",
        "gopher://example.com/",
        "crypto+http://example.com/x.ts",
        "",
    ],
)
def test_schemes_outside_the_allow_list_are_refused(url: str) -> None:
    with pytest.raises(SourceRefused, match="scheme|not a usable URL"):
        LOCAL.check_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("http://exa mple.com/", "white space"),
        ("http://a@b@example.com/", "more than one '@'"),
        ("http://example.com:99999/", "malformed"),
        ("http:///index.m3u8", "no host"),
        ("http://[fe80::1%25eth0]/", "scoped"),
        ("http://127.0.0.1/x", "loopback"),
        ("rtsp://[::1]:554/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(SourceRefused) as caught:
        PUBLIC.check_url(url)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message


def test_allowed_urls_parse() -> None:
    target = LOCAL.check_url("rtsp://cam:secret@192.168.1.20:8554/stream1")
    assert (target.scheme, target.host, target.port) == ("rtsp", "192.168.1.20", 8554)
    assert PUBLIC.check_url("HTTPS://Example.com./live.m3u8").host == "example.com"


def test_passwords_never_appear_in_errors() -> None:
    with pytest.raises(SourceRefused) as caught:
        PUBLIC.check_url("rtsp://admin:hunter2@10.0.0.5/live")
    assert "hunter2" not in str(caught.value)
    assert "admin:***@10.0.0.5" in str(caught.value)
    assert redact("http://example.com/a") == "http://example.com/a"


def fake_resolver(*addresses: str) -> Any:
    def resolve(host: str, port: object, *args: object) -> list[tuple[Any, ...]]:
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in addresses]

    return resolve


def test_every_resolved_address_is_checked() -> None:
    url = "http://cams.example.com/live.m3u8"
    assert PUBLIC.check(url, resolve=fake_resolver("93.184.216.34")).host == "cams.example.com"
    # One bad address among good ones is enough to refuse (DNS answers rotate).
    with pytest.raises(SourceRefused, match=r"cams.example.com \(10.0.0.7\) is a private"):
        PUBLIC.check(url, resolve=fake_resolver("93.184.216.34", "10.0.0.7"))
    with pytest.raises(SourceRefused, match="cloud metadata"):
        LOCAL.check(url, resolve=fake_resolver("169.254.169.254"))
    with pytest.raises(SourceUnavailable, match="cannot resolve cams.example.com"):
        PUBLIC.check(url, resolve=fake_resolver())


def test_real_resolution_of_localhost() -> None:
    with pytest.raises(SourceRefused, match="loopback"):
        PUBLIC.check("http://localhost:8080/x.m3u8")
    assert LOCAL.check("http://localhost:8080/x.m3u8").host == "localhost"


# -- FFmpeg options (pure) ------------------------------------------------------------------------


def test_ffmpeg_allow_lists() -> None:
    assert protocol_whitelist("http", LOCAL) == "http,tcp,https,tls"
    assert protocol_whitelist("https", LOCAL) == "https,tls,tcp,http"
    assert protocol_whitelist("rtsp", LOCAL) == "rtsp,rtp,udp,tcp"
    assert protocol_whitelist("rtmps", LOCAL) == "rtmps,tls,tcp"
    only_https = SourcePolicy(schemes=frozenset({"https"}))
    assert protocol_whitelist("https", only_https) == "https,tls,tcp"
    for scheme in ("http", "https", "rtsp", "rtmp", "rtmps"):
        names = set(protocol_whitelist(scheme, LOCAL).split(","))
        assert not names & {"file", "concat", "subfile", "data", "pipe", "crypto", "fd"}
    formats = set(FORMAT_WHITELIST.split(","))
    assert not formats & {"concat", "sdp", "rtp", "image2", "lavfi", "tee", "data"}


def test_rtmp_never_gets_the_listen_timeout() -> None:
    # For the rtmp protocol `timeout` means "listen for a client": it must never be passed.
    rtmp = ffmpeg_options("rtmp", LOCAL, open_timeout=2, read_timeout=3)
    assert "timeout" not in rtmp and rtmp["rw_timeout"] == "3000000"
    http = ffmpeg_options("http", LOCAL, open_timeout=2, read_timeout=3)
    assert http["timeout"] == "3000000"
    assert ffmpeg_options("rtsp", LOCAL, open_timeout=1, read_timeout=1)["rtsp_flags"]


# -- real opens over loopback ---------------------------------------------------------------------

EVIL_PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{uri}\n#EXT-X-ENDLIST\n"


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer({"live": LiveHlsSource((40, 90, 200))}) as running:
        running.add_file("passwd.m3u8", EVIL_PLAYLIST.format(uri="file:///etc/passwd"))
        running.add_file("passwd-ts.m3u8", EVIL_PLAYLIST.format(uri="file:///etc/passwd.ts"))
        running.add_file("data.m3u8", EVIL_PLAYLIST.format(uri="data:video/mp2t;base64,R0dH"))
        running.add_file("list.ffconcat", "ffconcat version 1.0\nfile /etc/passwd\n")
        yield running


def test_opens_a_live_source(server: SourceServer) -> None:
    with open_input(server.url("live"), LOCAL, open_timeout=5, read_timeout=5) as container:
        assert container.format.name == "hls"
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        assert (frame.width, frame.height) == (320, 180)


def test_public_policy_refuses_the_loopback_source(server: SourceServer) -> None:
    with pytest.raises(SourceRefused, match="127.0.0.1 is a loopback address"):
        open_input(server.url("live"), PUBLIC, open_timeout=5, read_timeout=5)


@pytest.mark.parametrize(
    "name", ["passwd.m3u8", "passwd-ts.m3u8", "data.m3u8", "list.ffconcat", "missing.m3u8"]
)
def test_hostile_or_missing_inputs_fail_to_open(server: SourceServer, name: str) -> None:
    with pytest.raises(SourceError) as caught:
        with open_input(server.file_url(name), LOCAL, open_timeout=3, read_timeout=3) as c:
            frames = list(c.decode(video=0))  # pragma: no cover - must not get here
            raise AssertionError(f"{name} opened and gave {len(frames)} frames")
    message = str(caught.value)
    # Either the source itself failed, or the playlist entry was refused by name.
    assert server.file_url(name) in message or "not allowed here" in message, message
    assert "root:" not in message


def test_connection_refused_is_unavailable() -> None:
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="cannot open: Connection refused"):
        open_input(refused_url(), LOCAL, open_timeout=3, read_timeout=3)
    assert time.monotonic() - start < 2


def test_a_server_that_never_answers_times_out() -> None:
    # A listening socket that never accepts: the kernel completes the TCP handshake, nobody
    # ever answers the request.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/live/index.m3u8"
        start = time.monotonic()
        with pytest.raises(SourceUnavailable, match=r"no answer within 1 s|timed out"):
            open_input(url, LOCAL, open_timeout=1, read_timeout=1)
        assert time.monotonic() - start < 3
