"""Rendition choice for HLS master playlists: the pure rule (parse, choose), and real opens of a
four-rendition master made with PyAV and served over loopback, counting what is fetched."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pipeline.sources.opener as opener
from pipeline.messages.frames import FrameHeader
from pipeline.producers.decode import DecodeThread
from pipeline.producers.release import Pixels
from pipeline.sources.opener import open_input
from pipeline.sources.policy import SourcePolicy, SourceRefused, SourceUnavailable
from pipeline.sources.renditions import (
    KNOWN,
    UNKNOWN,
    MasterPlaylistError,
    Variant,
    choose,
    codec_rank,
    is_master,
    parse_master,
)
from pipeline.sources.synthetic import LiveHlsSource, SourceServer, make_clip, rgb_to_yuv601
from tests.decoding import decode_thread

LOCAL = SourcePolicy.local()
TOLERANCE = 3  # a flat H.264 area vs the exact BT.601 value
TIMEOUT = 5.0

# -- the pure rule ------------------------------------------------------------------------------

MASTER = """#EXTM3U
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",DEFAULT=YES,URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="inband",NAME="Main",DEFAULT=YES
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",FRAME-RATE=29.97
hd/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.4d401e",AUDIO="aud"
/abs/sd.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,CODECS="avc1.42c00d",AUDIO="inband"
https://cdn.example.com/small.m3u8?token=secret
#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="mp4a.40.2"
audio-only.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,RESOLUTION=1280x720,URI="hd/iframes.m3u8"
"""
MASTER_URL = "http://cams.example.com/live/master.m3u8"


def v(
    w: int | None,
    h: int | None,
    bw: int = 1_000_000,
    codecs: str = "avc1.64001f",
    *,
    muxed: bool = False,
    name: str = "",
) -> Variant:
    return Variant(
        uri=f"http://x/{name or f'{w}x{h}-{bw}'}.m3u8",
        width=w,
        height=h,
        bandwidth=bw,
        codecs=tuple(c for c in codecs.split(",") if c),
        muxed_audio=muxed,
    )


LADDER = [v(1280, 720, 2_500_000), v(640, 360, 800_000), v(320, 180, 300_000), v(160, 90, 100_000)]


def test_parse_master() -> None:
    assert is_master(MASTER)
    assert not is_master("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n0.ts\n")
    hd, sd, small, audio = parse_master(MASTER, MASTER_URL)  # the I-frame playlist is not one
    assert hd == Variant(
        uri="http://cams.example.com/live/hd/index.m3u8",
        width=1280,
        height=720,
        bandwidth=2_500_000,
        codecs=("avc1.64001f", "mp4a.40.2"),
        frame_rate=29.97,
        muxed_audio=True,
    )
    assert sd.uri == "http://cams.example.com/abs/sd.m3u8"
    assert (sd.audio_group, sd.separate_audio, sd.muxed_audio) == ("aud", True, False)
    assert small.uri == "https://cdn.example.com/small.m3u8?token=secret"
    assert (small.separate_audio, small.muxed_audio) == (False, True)  # a group without URI
    assert (audio.width, audio.height, audio.area) == (None, None, 0)
    assert codec_rank(audio, lambda name: True) is None  # audio only: no picture
    assert hd.describe() == "1280x720 2.5 Mbit/s avc1.64001f,mp4a.40.2"
    assert sd.describe() == "640x360 0.8 Mbit/s avc1.4d401e (separate audio not fetched)"
    assert "token" not in small.describe()
    assert Variant("u", None, None, 0).describe() == "size unknown"


@pytest.mark.parametrize(
    "text",
    [
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=abc\nx.m3u8\n",
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=1280\nx.m3u8\n",
        "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1280x720\nx.m3u8\n",  # BANDWIDTH is required
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://[::1\n",
    ],
)
def test_unreadable_masters_raise_the_pure_error(text: str) -> None:
    with pytest.raises(MasterPlaylistError, match="unreadable master playlist"):
        parse_master(text, MASTER_URL)


@pytest.mark.parametrize(
    ("tile", "want"),
    [
        ((320, 180), (320, 180)),
        ((321, 180), (640, 360)),
        ((400, 225), (640, 360)),
        ((160, 90), (160, 90)),
        ((16, 16), (160, 90)),
        ((640, 100), (640, 360)),  # wide and flat: the width decides
        ((100, 400), (1280, 720)),  # tall and narrow: the height decides
        ((1920, 1080), (1280, 720)),  # none fills: the largest
    ],
)
def test_smallest_that_fills_else_largest(tile: tuple[int, int], want: tuple[int, int]) -> None:
    got = choose(LADDER, *tile)
    assert (got.width, got.height) == want
    assert choose(list(reversed(LADDER)), *tile) == got  # the order does not matter


def test_ties_muxed_audio_then_bandwidth() -> None:
    cheap, dear = v(640, 360, 600_000, name="cheap"), v(640, 360, 900_000, name="dear")
    assert choose([dear, cheap], 320, 180) is cheap  # fills: the lower bandwidth
    assert choose([cheap, dear], 1280, 720) is dear  # none fills: the higher one
    muxed = v(640, 360, 900_000, "avc1.4d401e,mp4a.40.2", muxed=True, name="muxed")
    assert choose([cheap, muxed, dear], 320, 180) is muxed  # equally good: audio with it
    assert choose([cheap, muxed, dear], 1280, 720) is muxed
    twin = v(640, 360, 600_000, name="twin")
    assert choose([cheap, twin], 320, 180) is cheap  # all equal: the first


def test_codecs() -> None:
    hevc = v(320, 180, 300_000, "hvc1.1.6.L93.B0,mp4a.40.2", name="hevc")
    ladder = [*LADDER[:2], hevc]
    assert choose(ladder, 320, 180) is hevc
    # Without an HEVC decoder the next size up is chosen.
    assert choose(ladder, 320, 180, can_decode=lambda name: name != "hevc") is LADDER[1]
    # AV1 needs a software decoder: FFmpeg's "av1" alone drives hardware only.
    av1 = v(320, 180, codecs="av01.0.04M.08")
    assert codec_rank(av1, lambda name: name == "av1") is None
    assert codec_rank(av1, lambda name: name == "libdav1d") == KNOWN
    # Unknown strings (and no CODECS at all) are kept, after every known one.
    odd, bare = v(320, 180, codecs="xyz1.2,mp4a.40.2"), v(320, 180, codecs="")
    assert codec_rank(odd, lambda name: True) == codec_rank(bare, lambda n: True) == UNKNOWN
    assert choose([odd, bare, LADDER[0]], 320, 180) is LADDER[0]
    assert (
        choose([odd, v(1280, 720, codecs="vp09.00.10.08")], 320, 180).codecs[0] == "vp09.00.10.08"
    )
    assert choose([odd, bare], 320, 180) is odd
    # An unknown extra string beside a known video codec (a new audio codec): still known.
    assert codec_rank(v(1, 1, codecs="avc1.64001f,zzzz"), lambda name: True) == KNOWN
    # Subtitles are not a picture.
    assert codec_rank(v(1, 1, codecs="wvtt"), lambda name: True) is None


def test_without_resolution_the_highest_bandwidth() -> None:
    low, high = v(None, None, 300_000), v(None, None, 2_000_000)
    assert choose([low, high], 320, 180) is high  # what FFmpeg would have decoded
    # Variants with a size come first (one without is often audio or an odd rendition).
    assert choose([high, LADDER[3]], 320, 180) is LADDER[3]


def test_nothing_to_choose() -> None:
    with pytest.raises(MasterPlaylistError, match="no variant stream"):
        choose([], 320, 180)
    only = [v(320, 180, codecs="hvc1.1.6.L93.B0"), v(None, None, codecs="mp4a.40.2")]
    with pytest.raises(MasterPlaylistError, match=r"FFmpeg decodes \(CODECS: hvc1.1.6.L93.B0;"):
        choose(only, 320, 180, can_decode=lambda name: name != "hevc")


SIZES = st.sampled_from([(160, 90), (320, 180), (640, 360), (1280, 720), (1920, 1080), (480, 640)])


@given(
    st.lists(st.tuples(SIZES, st.integers(1, 10_000_000), st.booleans()), min_size=1),
    st.integers(1, 2000),
    st.integers(1, 2000),
)
def test_choice_properties(
    entries: list[tuple[tuple[int, int], int, bool]], tile_w: int, tile_h: int
) -> None:
    variants = [
        v(w, h, bw, muxed=muxed, name=str(i)) for i, ((w, h), bw, muxed) in enumerate(entries)
    ]
    got = choose(variants, tile_w, tile_h)
    assert got in variants
    filling = [x for x in variants if x.fills(tile_w, tile_h)]
    if filling:
        assert got.fills(tile_w, tile_h)
        assert got.area == min(x.area for x in filling)
    else:
        assert got.area == max(x.area for x in variants)
    same = [x for x in variants if x.area == got.area]
    assert got.muxed_audio or not any(x.muxed_audio for x in same)


# -- real opens over loopback -------------------------------------------------------------------

# Four renditions, each a distinct colour, so a decoded picture says which one was fetched.
RENDITIONS = {
    (1280, 720): ((220, 30, 30), 2_500_000),
    (640, 360): ((30, 160, 60), 800_000),
    (320, 180): ((40, 60, 200), 300_000),
    (160, 90): ((220, 200, 40), 100_000),
}
SEGMENTS = 2
FPS = 10


def name(size: tuple[int, int]) -> str:
    return f"r{size[0]}x{size[1]}"


def media_playlist(size: tuple[int, int]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:0"]
    for seq in range(SEGMENTS):
        lines += ["#EXTINF:1.0,", f"{name(size)}-{seq}.ts"]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def master(codecs: dict[tuple[int, int], str] | None = None, uri: Callable[..., str] = name) -> str:
    lines = ["#EXTM3U"]
    for size, (_, bandwidth) in RENDITIONS.items():
        codec = (codecs or {}).get(size, "avc1.42c01e")
        attrs = f'BANDWIDTH={bandwidth},RESOLUTION={size[0]}x{size[1]},CODECS="{codec}"'
        lines += [f"#EXT-X-STREAM-INF:{attrs}", f"{uri(size)}.m3u8"]
    return "\n".join([*lines, ""])


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    """Every file of the four renditions (made once: x264 at 1280x720 is the slow part)."""
    files: dict[str, bytes] = {}
    now = time.time()
    for size, (colour, _) in RENDITIONS.items():
        source = LiveHlsSource(colour, width=size[0], height=size[1], fps=FPS, segment_frames=FPS)
        for seq in range(SEGMENTS):
            files[f"{name(size)}-{seq}.ts"] = source.encode_segment(seq, now + seq)
        files[f"{name(size)}.m3u8"] = media_playlist(size).encode()
    files["clip.mp4"] = make_clip((40, 60, 200), seconds=1, fps=FPS, format="mp4")
    return files


@pytest.fixture
def server(media: dict[str, bytes]) -> Iterator[SourceServer]:
    """A fresh server per test, so that its request counts are the test's own."""
    with SourceServer() as running:
        for file, data in media.items():
            running.add_file(file, data)
        running.add_file("master.m3u8", master())
        yield running


def fetched(server: SourceServer, size: tuple[int, int]) -> tuple[int, int]:
    """(requests for the playlist, requests for segments) of one rendition."""
    counts = server.requests()
    playlist = counts.get(f"/files/{name(size)}.m3u8", 0)
    segments = sum(n for path, n in counts.items() if path.startswith(f"/files/{name(size)}-"))
    return playlist, segments


def assert_only(server: SourceServer, size: tuple[int, int]) -> None:
    """Only the rendition ``size`` was fetched: its playlist once, some of its segments."""
    for other in RENDITIONS:
        playlist, segments = fetched(server, other)
        if other == size:
            assert playlist == 1 and segments >= 1, (other, playlist, segments)
        else:
            assert (playlist, segments) == (0, 0), f"{name(other)} was fetched"


def assert_colour(y: np.ndarray, u: np.ndarray, v: np.ndarray, rgb: tuple[int, int, int]) -> None:
    # The top quarter: the moving white square is in the middle rows.
    rows_y, rows_uv = y.shape[0] // 4, u.shape[0] // 4
    got = (float(y[:rows_y].mean()), float(u[:rows_uv].mean()), float(v[:rows_uv].mean()))
    want = rgb_to_yuv601(rgb)
    assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, want, strict=True)), (got, want)


def open_and_look(url: str, fit: tuple[int, int] | None) -> tuple[list[str], tuple[int, int]]:
    """Open ``url`` for a tile of ``fit``: what ``chosen`` was told, and the decoded size; the
    first picture's colour is checked against the rendition of that size."""
    told: list[str] = []
    with open_input(
        url, LOCAL, open_timeout=TIMEOUT, read_timeout=TIMEOUT, fit=fit, chosen=told.append
    ) as container:
        frame = next(container.decode(video=0))
        size = (frame.width, frame.height)
        picture = frame.to_ndarray()  # yuv420p: Y rows, then U and V packed below
    w, h = size
    y, uv = picture[:h], picture[h:].reshape(2, h // 2, w // 2)
    assert_colour(y, uv[0], uv[1], RENDITIONS[size][0])
    return told, size


def planes(pixels: bytes, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of a packed yuv420p tile."""
    flat = np.frombuffer(pixels, np.uint8)
    y = flat[: w * h].reshape(h, w)
    u = flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
    v = flat[w * h * 5 // 4 :].reshape(h // 2, w // 2)
    return y, u, v


def run_until(decoder: DecodeThread, enough: threading.Event, within: float = 10.0) -> None:
    """Run ``decoder`` until ``enough`` is set (at most ``within`` s), then stop it."""
    decoder.start()
    try:
        assert enough.wait(within), f"frames within {within:g} s (last: {decoder.last_error!r})"
    finally:
        decoder.stop()
        decoder.join()


def ladder(
    server: SourceServer,
    source_id: str,
    emit: Callable[[FrameHeader, Pixels], None],
    also: Sequence[tuple[str, int, int]] = (),
) -> DecodeThread:
    """A decode thread of the master playlist for a 320x180 tile (and the sizes ``also``)."""
    return decode_thread(
        server.file_url("master.m3u8"), source_id, emit, fps=FPS, timeout=TIMEOUT, also=also
    )


def test_a_grabber_fetches_only_the_rendition_that_fits_its_tile(server: SourceServer) -> None:
    frames: list[tuple[FrameHeader, bytes]] = []
    enough = threading.Event()

    def emit(header: FrameHeader, pixels: Pixels) -> None:
        frames.append((header, bytes(pixels)))
        if len(frames) >= 3:
            enough.set()

    decoder = ladder(server, "ladder", emit)
    run_until(decoder, enough)
    assert decoder.rendition == "320x180 0.3 Mbit/s avc1.42c01e"
    assert server.requests()["/files/master.m3u8"] >= 1
    assert_only(server, (320, 180))
    for header, pixels in frames:
        assert (header.width, header.height) == (320, 180)
        assert_colour(*planes(pixels, 320, 180), RENDITIONS[(320, 180)][0])


def test_a_grabber_of_several_tile_sizes_fits_the_box_that_holds_them_all(
    server: SourceServer,
) -> None:
    """320x180, a wide 400x120 and 160x90 of one master: one decode of the variant that fills
    400x180 (640x360; 320x180 would be too narrow for the wide tile), only its segments
    fetched, every size made from it."""
    sizes = [("big", 320, 180), ("wide", 400, 120), ("small", 160, 90)]
    frames: dict[str, list[tuple[FrameHeader, bytes]]] = {sid: [] for sid, _, _ in sizes}
    enough = threading.Event()

    def emit(header: FrameHeader, pixels: Pixels) -> None:
        frames[header.source_id].append((header, bytes(pixels)))
        if all(len(got) >= 3 for got in frames.values()):
            enough.set()

    decoder = ladder(server, "big", emit, also=sizes[1:])
    assert decoder.box == (400, 180)
    run_until(decoder, enough)
    assert decoder.rendition.startswith("640x360 ")
    assert_only(server, (640, 360))
    for sid, w, h in sizes:
        header, pixels = frames[sid][-1]
        assert (header.width, header.height) == (w, h)
        y, u, v = planes(pixels, w, h)
        # The wide tile's picture (212x120) is centred between black bars: look inside it.
        x0 = (w - h * 16 // 9) // 4 * 2 + 4 if sid == "wide" else 0
        x1 = w - x0
        assert_colour(y[:, x0:x1], u[:, x0 // 2 : x1 // 2], v[:, x0 // 2 : x1 // 2],
                      RENDITIONS[(640, 360)][0])  # fmt: skip
    seqs = [{header.seq for header, _ in got} for got in frames.values()]
    assert seqs[0] & seqs[1] & seqs[2], "the same frames in every size"


def test_a_retiled_decode_thread_moves_between_variants_and_keeps_its_connection_otherwise(
    server: SourceServer,
) -> None:
    """A running decode thread given other tiles (:meth:`DecodeThread.retile`): a larger tile
    moves it up to the variant that fills it (opened again at once, not counted as a
    reconnect), dropping the larger tile moves it back down, and a smaller size within the box
    is only a new scaler on the same connection (not opened again). Every size
    shows the colour of the variant decoded at the time."""
    lock = threading.Lock()
    frames: dict[str, list[tuple[FrameHeader, bytes]]] = {}
    want: dict[str, int] = {}
    enough = threading.Event()

    def emit(header: FrameHeader, pixels: Pixels) -> None:
        with lock:
            frames.setdefault(header.source_id, []).append((header, bytes(pixels)))
            if all(len(frames.get(sid, ())) >= n for sid, n in want.items()):
                enough.set()

    def until_frames(**counts: int) -> None:
        with lock:
            enough.clear()
            want.clear()
            want.update({sid: len(frames.get(sid, ())) + n for sid, n in counts.items()})
        assert enough.wait(10), f"frames of {counts} (last error: {decoder.last_error!r})"

    def last_colour(sid: str, size: tuple[int, int]) -> None:
        header, pixels = frames[sid][-1]
        assert (header.width, header.height) == size
        assert_colour(*planes(pixels, *size), RENDITIONS[decoded][0])

    decoder = decode_thread(
        server.file_url("master.m3u8"), "small", emit, width=160, height=90, fps=FPS,
        timeout=TIMEOUT,
    )  # fmt: skip
    decoder.start()
    try:
        until_frames(small=3)
        decoded = (160, 90)
        assert decoder.rendition.startswith("160x90 ")
        decoder.retile([("big", 640, 360), ("small", 160, 90)], FPS)
        until_frames(big=3, small=3)
        decoded = (640, 360)
        assert decoder.rendition.startswith("640x360 ") and decoder.box == (640, 360)
        assert fetched(server, (640, 360))[1] >= 1
        last_colour("big", (640, 360))
        last_colour("small", (160, 90))
        assert decoder.reopens == 1
        decoder.retile([("small", 160, 90)], FPS)
        until_frames(small=FPS + 3)  # past what was decoded ahead of the change
        decoded = (160, 90)
        assert decoder.rendition.startswith("160x90 ")
        last_colour("small", (160, 90))
        assert decoder.reopens == 2
        decoder.retile([("small", 160, 90), ("tiny", 96, 54)], FPS)
        until_frames(tiny=3, small=3)
        last_colour("tiny", (96, 54))
        assert decoder.reopens == 2, "opened again for nothing"
        assert decoder.tiles == (("small", 160, 90), ("tiny", 96, 54))
        assert decoder.reconnects == 0 and decoder.last_error == ""
        with pytest.raises(ValueError, match="even"):
            decoder.retile([("odd", 81, 45)], FPS)
    finally:
        decoder.stop()
        decoder.join()


@pytest.mark.parametrize(
    ("tile", "want"), [((400, 225), (640, 360)), ((1920, 1080), (1280, 720)), ((80, 45), (160, 90))]
)
def test_the_tile_size_picks_the_rendition(
    server: SourceServer, tile: tuple[int, int], want: tuple[int, int]
) -> None:
    told, size = open_and_look(server.file_url("master.m3u8"), tile)
    assert size == want
    assert told == [f"{want[0]}x{want[1]} {RENDITIONS[want][1] / 1e6:.3g} Mbit/s avc1.42c01e"]
    assert server.requests()["/files/master.m3u8"] == 1
    assert_only(server, want)


def test_a_variant_ffmpeg_cannot_decode_is_skipped(
    server: SourceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This FFmpeg decodes HEVC: pretend it does not, and label the 320x180 rendition HEVC.
    monkeypatch.setattr(opener, "has_decoder", lambda decoder: decoder != "hevc")
    url = server.add_file("hevc.m3u8", master({(320, 180): "hvc1.1.6.L93.B0"}))
    told, size = open_and_look(url, (320, 180))
    assert size == (640, 360) and told[0].startswith("640x360 ")
    assert_only(server, (640, 360))
    # None left: a clear error, nothing fetched but the master.
    url = server.add_file("all-hevc.m3u8", master(dict.fromkeys(RENDITIONS, "hvc1.1.6.L93.B0")))
    with pytest.raises(SourceUnavailable, match="no variant with a video codec this FFmpeg"):
        open_input(url, LOCAL, open_timeout=TIMEOUT, read_timeout=TIMEOUT, fit=(320, 180))
    assert_only(server, (640, 360))


@pytest.mark.parametrize("file", ["r320x180.m3u8", "clip.mp4", "r320x180-0.ts"])
def test_other_sources_open_as_before(server: SourceServer, file: str) -> None:
    url = server.file_url(file)
    told, size = open_and_look(url, (320, 180))
    assert told == [""] and size == (320, 180)
    with_fit = server.requests()
    open_and_look(url, None)
    without_fit = {path: n - with_fit.get(path, 0) for path, n in server.requests().items()}
    # What was read to look at the source is handed to FFmpeg, not fetched twice.
    assert {p: n for p, n in with_fit.items() if n} == {p: n for p, n in without_fit.items() if n}


def test_a_master_without_fit_is_ffmpegs_as_before(server: SourceServer) -> None:
    told, size = open_and_look(server.file_url("master.m3u8"), None)
    assert told == [] and size == (1280, 720)


def test_a_master_m3u8_cannot_read_is_left_to_ffmpeg(server: SourceServer) -> None:
    # No BANDWIDTH: against the spec, refused by m3u8, played by FFmpeg. Let FFmpeg choose.
    text = master().replace("BANDWIDTH=100000,", "")
    told, size = open_and_look(server.add_file("odd.m3u8", text), (320, 180))
    assert told == ["FFmpeg's choice (master playlist not understood)"]
    assert size in RENDITIONS


def test_a_variant_on_a_refused_address_is_never_fetched(server: SourceServer) -> None:
    metadata = server.add_file(
        "metadata.m3u8", master(uri=lambda size: f"http://169.254.169.254/{name(size)}")
    )
    told: list[str] = []
    with pytest.raises(SourceRefused, match=r"cloud metadata.*\(the 320x180 .* variant of http"):
        open_input(
            metadata,
            LOCAL,
            open_timeout=TIMEOUT,
            read_timeout=TIMEOUT,
            fit=(320, 180),
            chosen=told.append,
        )
    assert told == ["320x180 0.3 Mbit/s avc1.42c01e"]


def test_a_variant_on_a_host_the_policy_refuses_is_never_fetched(media: dict[str, bytes]) -> None:
    # The source on 127.0.0.2 (allowed as an operator's CIDR); its variants on 127.0.0.1 (a
    # loopback address the public policy refuses).
    public = SourcePolicy.public(["127.0.0.2/32"])
    with SourceServer(host="127.0.0.2") as source, SourceServer() as elsewhere:
        for file, data in media.items():
            elsewhere.add_file(file, data)
        base = f"http://127.0.0.1:{elsewhere.port}/files/"
        url = source.add_file("master.m3u8", master(uri=lambda size: base + name(size)))
        with pytest.raises(SourceRefused, match="127.0.0.1 is a loopback address"):
            open_input(url, public, open_timeout=TIMEOUT, read_timeout=TIMEOUT, fit=(320, 180))
        assert source.requests() == {"/files/master.m3u8": 1}
        assert elsewhere.requests() == {}
