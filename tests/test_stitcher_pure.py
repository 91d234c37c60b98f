"""The stitcher's pure parts, without NATS: canvas, labels, placeholder tiles, playlist window,
compositor, and the segmenting encoder (whose output is decoded with PyAV and checked)."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import m3u8
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.consumers import labels
from pipeline.consumers.canvas import (
    BLACK,
    Canvas,
    Planes,
    planes_of,
    planes_to_rgb,
    rgb_to_planes,
    rgb_to_yuv,
    solid,
    yuv420p_size,
)
from pipeline.consumers.clock import TickClock, TickMeter
from pipeline.consumers.compositor import DEAD, WAITING, Compositor, TileKind, TileView
from pipeline.consumers.deadtile import dead_tile, waiting_tile
from pipeline.consumers.encoder import (
    EncodedSegment,
    EncoderError,
    EncoderSettings,
    SegmentEncoder,
)
from pipeline.consumers.labels import (
    ELLIPSIS,
    draw_label,
    ellipsise_middle,
    font_size,
    label_text,
    render_label,
    short_url,
    strip_height,
)
from pipeline.consumers.newest import NewestFrame, fits_tile, tile_views
from pipeline.consumers.render import MosaicRenderer, RenderedPart, RenderedSegment
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader
from pipeline.segments.playlist import (
    MIN_TARGET_DURATIONS,
    PlaylistWindow,
    SegmentEntry,
    empty_playlist,
    next_sequence,
)

even = st.integers(min_value=1, max_value=40).map(lambda n: n * 2)
colour = st.tuples(*(st.integers(0, 255) for _ in range(3)))


# --- canvas ----------------------------------------------------------------------------------


def test_planes_of_views_packed_yuv420p_without_copying() -> None:
    data = bytearray(i % 251 for i in range(yuv420p_size(16, 8)))
    planes = planes_of(data, 16, 8)
    assert planes.y.shape == (8, 16) and planes.u.shape == (4, 8) and planes.v.shape == (4, 8)
    assert planes.u[0, 0] == data[16 * 8]
    assert planes.v[0, 0] == data[16 * 8 + 32]
    data[0] = 7
    assert planes.y[0, 0] == 7  # a view


def test_planes_of_names_the_size_mismatch() -> None:
    with pytest.raises(ValueError, match="16x8 yuv420p picture has 192 bytes"):
        planes_of(b"\0" * 100, 16, 8)
    with pytest.raises(ValueError, match="even size"):
        planes_of(b"\0" * 100, 15, 8)


@given(
    w=even,
    h=even,
    tw=even,
    th=even,
    x=st.integers(0, 40).map(lambda n: n * 2),
    y=st.integers(0, 40).map(lambda n: n * 2),
    yuv=colour,
)
def test_blit_puts_the_tile_at_its_origin_and_nothing_else(
    w: int, h: int, tw: int, th: int, x: int, y: int, yuv: tuple[int, int, int]
) -> None:
    canvas = Canvas(w, h)
    tile = solid(tw, th, yuv)
    if x + tw > w or y + th > h:
        with pytest.raises(ValueError, match="does not fit"):
            canvas.blit(tile, x, y)
        return
    canvas.blit(tile, x, y)
    inside = np.zeros((h, w), dtype=bool)
    inside[y : y + th, x : x + tw] = True
    assert (canvas.planes.y[inside] == yuv[0]).all()
    assert (canvas.planes.y[~inside] == BLACK[0]).all()
    c_inside = inside[::2, ::2]
    assert (canvas.planes.u[c_inside] == yuv[1]).all()
    assert (canvas.planes.v[c_inside] == yuv[2]).all()
    assert (canvas.planes.u[~c_inside] == 128).all()
    # The planes are the frame the encoder takes (drawn in place); the array is its packed copy.
    assert canvas.array.shape == (h * 3 // 2, w)
    assert (canvas.frame.to_ndarray() == canvas.array).all()


def test_fill_box_must_sit_on_the_chroma_grid() -> None:
    canvas = Canvas(8, 8)
    canvas.fill((100, 90, 80), box=(2, 2, 4, 4))
    assert canvas.planes.y[2:6, 2:6].min() == 100 and canvas.planes.y[0, 0] == 16
    with pytest.raises(ValueError, match="chroma grid"):
        canvas.fill((0, 0, 0), box=(1, 0, 2, 2))


def test_known_colours_convert_to_bt601_limited_range() -> None:
    assert rgb_to_yuv((0, 0, 0)) == (16, 128, 128)
    assert rgb_to_yuv((255, 255, 255)) == (235, 128, 128)
    y, u, v = rgb_to_yuv((255, 0, 0))
    assert (y, u, v) == (81, 90, 240)


@given(rgb=colour)
def test_rgb_survives_a_round_trip_through_yuv(rgb: tuple[int, int, int]) -> None:
    image = np.broadcast_to(np.array(rgb, dtype=np.uint8), (4, 4, 3)).copy()
    back = planes_to_rgb(rgb_to_planes(image))
    # 8-bit limited range loses a little: 219 luma steps for 256 values.
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 3


# --- labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "short"),
    [
        (
            "https://cams.example.com/live/lobby/index.m3u8",
            f"cams.example.com/{ELLIPSIS}/index.m3u8",
        ),
        ("rtsp://10.0.0.7:554/ch1", "10.0.0.7/ch1"),
        ("http://example.com", "example.com"),
        ("/srv/media/clip.mp4", "clip.mp4"),
        ("http://h/a%20b.ts", "h/a b.ts"),
    ],
)
def test_short_url_is_host_and_last_path_part(url: str, short: str) -> None:
    assert short_url(url) == short


def test_label_text_prefers_the_name() -> None:
    assert label_text("  Lobby \n cam ", "http://x/y") == "Lobby cam"
    assert label_text("", "http://x/y") == "x/y"


@given(text=st.text(min_size=0, max_size=120), limit=st.integers(1, 60))
def test_ellipsise_middle_respects_the_limit(text: str, limit: int) -> None:
    out = ellipsise_middle(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    elif limit >= 3:
        assert ELLIPSIS in out and out[0] == text[0]


def test_label_is_rendered_once_per_text_and_tile_size() -> None:
    a = render_label("cam 1", 320, 180)
    assert render_label("cam 1", 320, 180) is a
    assert render_label("cam 1", 640, 360) is not a


def test_label_is_readable_on_a_320x180_tile() -> None:
    label = render_label("Lobby camera 3", 320, 180)
    assert font_size(180) >= 13
    assert label.height == strip_height(180) and label.height % 2 == 0
    rows, cols = np.nonzero(label.mask > 128)
    # Solid glyph pixels spanning a real text height and a good part of the width.
    assert rows.max() - rows.min() >= 9
    assert 60 <= cols.max() - cols.min() <= 320
    assert label.text == "Lobby camera 3"


def test_labels_fall_back_to_the_bundled_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labels, "FONT_FILES", ("no-such-font-anywhere.ttf",))
    labels.font.cache_clear()
    try:
        face = labels.font(15)
        assert "Aileron" in " ".join(str(n) for n in face.getname())  # type: ignore[union-attr]
        assert labels.fit_text("Lobby", face, 200) == "Lobby"
    finally:
        labels.font.cache_clear()


def test_long_label_is_ellipsised_to_the_tile() -> None:
    label = render_label("a very long camera name " * 5, 160, 90)
    assert label.text.endswith(ELLIPSIS)
    assert np.nonzero(label.mask.max(axis=0))[0].max() < 160 - 1


@given(base=colour)
@settings(max_examples=25, deadline=None)
def test_label_darkens_the_strip_and_draws_white_text(base: tuple[int, int, int]) -> None:
    canvas = Canvas(320, 180)
    yuv = rgb_to_yuv(base)
    canvas.fill(yuv)
    label = render_label("Cam 01", 320, 180)
    draw_label(canvas, label, 0, 0, 180)
    strip = canvas.planes.y[180 - label.height :, :]
    above = canvas.planes.y[: 180 - label.height, :]
    assert (above == yuv[0]).all()  # only the strip is touched
    text = label.mask == 255  # glyph cores; edges are anti-aliased
    background = label.mask == 0
    # Readable: text is near white, the backdrop near dark, whatever the picture was.
    assert text.any() and strip[text].min() >= 230
    assert strip[background].max() <= 16 + (yuv[0] - 16) * 0.4 + 2
    # Neutral chroma under the strip: pulled at least STRIP_ALPHA of the way to 128.
    u = canvas.planes.u[(180 - label.height) // 2 :, :].astype(int)
    assert np.abs(u - 128).max() <= abs(yuv[1] - 128) * 0.4 + 2


# --- placeholder tiles -----------------------------------------------------------------------


def _rgb_mean(planes: Planes) -> tuple[float, ...]:
    return tuple(float(c) for c in planes_to_rgb(planes).reshape(-1, 3).mean(axis=0))


def test_dead_tile_is_a_crossed_red_cloud_with_no_signal_and_the_name() -> None:
    tile = dead_tile(320, 180, "Lobby")
    assert dead_tile(320, 180, "Lobby") is tile  # cached
    assert not tile.y.flags.writeable
    rgb = planes_to_rgb(tile)
    cloud = rgb[30:100, 100:220].reshape(-1, 3).astype(int)
    red = (cloud[:, 0] > 150) & (cloud[:, 1] < 80) & (cloud[:, 2] < 80)
    assert red.mean() > 0.3  # a big red area
    white = (cloud > 230).all(axis=1)
    assert white.mean() > 0.03  # the cross over it
    # Text below the cloud: "no signal", then the name.
    assert (rgb[110:135].reshape(-1, 3) > 200).all(axis=1).sum() > 50
    assert not np.array_equal(tile.y, dead_tile(320, 180, "Garage").y)
    assert not np.array_equal(tile.y, dead_tile(320, 180, "").y)


def test_waiting_tile_is_quiet_grey() -> None:
    tile = waiting_tile(320, 180)
    mean = _rgb_mean(tile)
    assert max(mean) - min(mean) < 10 and 30 < sum(mean) / 3 < 70


# --- playlist --------------------------------------------------------------------------------


def _push_all(window: PlaylistWindow, entries: list[SegmentEntry]) -> list[PlaylistWindow]:
    out = []
    for entry in entries:
        window, _ = window.push(entry)
        out.append(window)
    return out


@st.composite
def segment_runs(draw: st.DrawFn) -> list[SegmentEntry]:
    count = draw(st.integers(1, 40))
    seq = draw(st.integers(0, 10_000))
    start = 1_700_000_000.0
    entries = []
    for _ in range(count):
        seq += draw(st.sampled_from([1, 1, 1, 1, 2, 5]))  # mostly consecutive, some gaps
        duration = draw(st.floats(0.04, 6.0, allow_nan=False))
        entries.append(SegmentEntry(seq, duration, start))
        start += duration
    return entries


@given(entries=segment_runs(), size=st.integers(1, 10), segment=st.floats(0.1, 4.0))
@settings(max_examples=150, deadline=None)
def test_playlist_window_keeps_the_rfc_rules(
    entries: list[SegmentEntry], size: int, segment: float
) -> None:
    windows = _push_all(PlaylistWindow.for_segments(segment, size), entries)
    last_ms = -1
    last_target = 0
    stored = {e.seq for e in entries}
    for window in windows:
        parsed = m3u8.loads(window.render())
        assert parsed.version == 3 and parsed.is_independent_segments
        assert not parsed.is_endlist
        ms = parsed.media_sequence or 0
        assert ms >= last_ms  # media sequence only grows
        last_ms = ms
        target = parsed.target_duration
        assert target >= last_target  # and the target duration never shrinks
        last_target = target
        durations = [s.duration for s in parsed.segments]
        assert all(target >= math.ceil(d) for d in durations)
        # URIs are the media sequence numbers: consecutive, relative, all stored.
        uris = [s.uri for s in parsed.segments]
        assert uris == [f"{ms + i}.ts" for i in range(len(uris))]
        assert {int(u[:-3]) for u in uris} <= stored
        assert all(s.program_date_time is not None for s in parsed.segments)
        # Window: at most `size` segments unless fewer would last under 3 target durations.
        if len(durations) > size:
            assert sum(durations[1:]) < MIN_TARGET_DURATIONS * target
        assert next_sequence(window.render()) == window.entries[-1].seq + 1


def test_playlist_drops_the_oldest_segments_and_says_which() -> None:
    window = PlaylistWindow.for_segments(1.0, size=3)
    removed_all = []
    for seq in range(10, 16):
        window, removed = window.push(SegmentEntry(seq, 1.0, 1000.0 + seq))
        removed_all += [e.seq for e in removed]
    assert [e.seq for e in window.entries] == [13, 14, 15]
    assert removed_all == [10, 11, 12]
    assert window.keep_from == 13 - 3 - 1
    text = window.render()
    assert "#EXT-X-MEDIA-SEQUENCE:13" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:16:55.000+00:00" in text


def test_a_gap_starts_a_new_run() -> None:
    window = PlaylistWindow.for_segments(1.0)
    for seq in (1, 2, 3):
        window, _ = window.push(SegmentEntry(seq, 1.0, 0.0))
    window, removed = window.push(SegmentEntry(5, 1.0, 0.0))
    assert [e.seq for e in removed] == [1, 2, 3]
    assert window.media_sequence == 5
    with pytest.raises(ValueError, match="only grow"):
        window.push(SegmentEntry(5, 1.0, 0.0))


def test_empty_playlist_is_a_valid_live_playlist() -> None:
    text = empty_playlist(1.0)
    parsed = m3u8.loads(text)
    assert parsed.target_duration == 1 and parsed.segments == [] and not parsed.is_endlist
    assert text.startswith("#EXTM3U\n")
    assert next_sequence(text) == 0
    assert m3u8.loads(empty_playlist(2.5)).target_duration == 3
    with pytest.raises(ValueError):
        empty_playlist(0)


# --- encoder ---------------------------------------------------------------------------------


def _decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        return list(container.decode(video=0))


def _key_and_params_first(data: bytes) -> bool:
    """The first video packet is a keyframe carrying SPS (NAL 7) and PPS (NAL 8)."""
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        raw = bytes(packet)
    nal_types = {raw[i + 3] & 0x1F for i in range(len(raw) - 4) if raw[i : i + 3] == b"\0\0\1"}
    return packet.is_keyframe and {7, 8, 5} <= nal_types


def test_encoder_cuts_standalone_segments_with_continuous_pts() -> None:
    settings_ = EncoderSettings(160, 96, 25, segment_duration=0.4, preset="ultrafast")
    assert settings_.frames_per_segment == 10
    encoder = SegmentEncoder(settings_, first_index=7)
    canvas = Canvas(160, 96)
    segments: list[EncodedSegment] = []
    for i in range(35):
        canvas.fill((16 + i * 5, 128, 128))
        # The same frame each time, redrawn in place (as the stitcher does): every picture
        # must be encoded as it was when encode() was called.
        done = encoder.encode(canvas.frame)
        if done is not None:
            segments.append(done)
            assert i % 10 == 9  # returned on the frame that completes it
    encoder.close()
    encoder.close()
    assert [s.index for s in segments] == [7, 8, 9]  # frames 30-34 were dropped, not flushed
    previous_end = None
    for s in segments:
        assert s.frames == 10 and s.duration == pytest.approx(0.4)
        assert _key_and_params_first(s.data)
        frames = _decode(s.data)  # decodes alone
        assert len(frames) == 10 and frames[0].key_frame
        assert all(not f.key_frame for f in frames[1:])
        pts = [int(f.pts or 0) for f in frames]
        step = 90_000 // 25
        assert pts == list(range(pts[0], pts[0] + 10 * step, step))
        if previous_end is not None:
            assert pts[0] == previous_end + step  # continuous across segments
        previous_end = pts[-1]
    # Pictures are what was drawn: frame i of segment 7 is grey 16 + (i) * 5, give or take.
    first = _decode(segments[0].data)
    for i in range(10):
        assert abs(float(first[i].to_ndarray()[:96].mean()) - (16 + i * 5)) < 3


def test_encoder_takes_planes_and_video_frames() -> None:
    settings_ = EncoderSettings(64, 32, 10, segment_duration=0.2, preset="ultrafast")
    encoder = SegmentEncoder(settings_)
    assert encoder.encode(solid(64, 32, (200, 60, 70))) is None
    rgb = av.VideoFrame.from_ndarray(np.zeros((16, 32, 3), dtype=np.uint8), format="rgb24")
    done = encoder.encode(rgb)  # converted and scaled
    assert done is not None and done.frames == 2
    frames = _decode(done.data)
    assert abs(float(frames[0].to_ndarray()[:32].mean()) - 200) < 4
    with pytest.raises(EncoderError, match="is not a 64x32 yuv420p array"):
        encoder.encode(np.zeros((10, 10), dtype=np.uint8))
    encoder.close()
    with pytest.raises(EncoderError, match="closed"):
        encoder.encode(solid(64, 32, (0, 0, 0)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 63}, "must be even"),
        ({"fps": 0}, "fps=0"),
        ({"preset": "warp"}, "preset='warp'"),
        ({"crf": 60}, "crf=60"),
        ({"segment_duration": 0.0}, "segment_duration"),
        ({"bitrate": 10}, "bitrate=10"),
    ],
)
def test_encoder_settings_name_the_bad_value(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"width": 64, "height": 32, "fps": 25}
    with pytest.raises(EncoderError, match=message):
        EncoderSettings(**{**base, **kwargs})  # type: ignore[arg-type]


def test_encoder_bitrate_mode_caps_the_rate() -> None:
    settings_ = EncoderSettings(64, 32, 25, bitrate=200_000)
    assert "vbv-maxrate=200" in settings_.x264_params()
    encoder = SegmentEncoder(settings_)
    encoder.close()


# --- compositor and renderer -----------------------------------------------------------------

TILES = (Tile("http://a/1", "one"), Tile("http://b/2", "two"), Tile("http://c/3", ""))


def _live(yuv: tuple[int, int, int], serial: int, wall: float = 0.0) -> TileView:
    planes = solid(160, 90 - 90 % 2, yuv)
    data = b"".join(p.tobytes() for p in planes)
    header = FrameHeader(
        source_id="s", seq=serial, pts=0.0, wall=wall, width=160, height=planes.height
    )
    return TileView(TileKind.LIVE, serial, header, data)


def test_compositor_places_tiles_labels_and_placeholders() -> None:
    compositor = Compositor(TILES, 320, 180)
    grid = compositor.layout
    assert all(r.size == (160, 90) for r in grid.rects)
    red = rgb_to_yuv((220, 30, 30))
    canvas = compositor.compose([_live(red, 1), WAITING, DEAD])
    x, y = grid.rects[0].x, grid.rects[0].y
    body = canvas.planes.y[y : y + 60, x : x + 160]
    assert (body == red[0]).all()
    strip = canvas.planes.y[y + 90 - compositor.labels[0].height : y + 90, x : x + 160]
    assert not (strip == red[0]).all()  # labelled
    wx, wy = grid.rects[1].x, grid.rects[1].y
    assert np.array_equal(
        canvas.planes.y[wy : wy + 60, wx : wx + 160], waiting_tile(160, 90).y[:60]
    )
    dx, dy = grid.rects[2].x, grid.rects[2].y
    # A nameless tile's dead picture names its URL instead.
    assert np.array_equal(canvas.planes.y[dy : dy + 90, dx : dx + 160], dead_tile(160, 90, "c/3").y)
    # An unchanged view is not drawn again; a new serial is.
    canvas.planes.y[y, x] = 0
    compositor.compose([_live(red, 1), WAITING, DEAD])
    assert canvas.planes.y[y, x] == 0
    compositor.compose([_live(red, 2), WAITING, DEAD])
    assert canvas.planes.y[y, x] == red[0]


def test_renderer_reports_segment_times() -> None:
    settings_ = EncoderSettings(320, 180, 10, segment_duration=0.5, preset="ultrafast")
    renderer = MosaicRenderer(TILES, settings_, first_index=3)
    done: list[RenderedSegment] = []
    frames = []
    for i in range(10):
        views = [_live((100, 120, 130), i + 1, wall=500.0 + i), WAITING, DEAD]
        result = renderer.render(views, wall=1000.0 + i / 10)
        frames += result.frames
        done += [o for o in result.outputs if isinstance(o, RenderedSegment)]
    renderer.close()
    assert [d.segment.index for d in done] == [3, 4]
    assert done[0].start_wall == pytest.approx(1000.0)
    assert done[1].start_wall == pytest.approx(1000.5)
    assert done[0].first_wall == 500.0 and done[1].first_wall == 505.0
    assert renderer.last_ms > 0
    assert done[1].segment.first_pts == 4 * 5
    assert Fraction(done[0].segment.duration).limit_denominator(100) == Fraction(1, 2)
    # Every picture also comes out alone, Annex-B, keyframes where segments start.
    assert [f.pts for f in frames] == list(range(15, 25))
    assert [f.keyframe for f in frames] == [i % 5 == 0 for i in range(10)]
    assert all(f.data.startswith((b"\0\0\0\1", b"\0\0\1")) for f in frames)
    assert frames[3].wall == pytest.approx(1000.3)


def test_renderer_cuts_cmaf_parts_with_their_times() -> None:
    settings_ = EncoderSettings(320, 180, 10, segment_duration=1.0, preset="ultrafast")
    renderer = MosaicRenderer(TILES, settings_, first_index=2, hls_format="cmaf")
    parts: list[RenderedPart] = []
    for i in range(20):
        views = [_live((100, 120, 130), i + 1, wall=500.0 + i), WAITING, DEAD]
        parts += [o for o in renderer.render(views, wall=1000.0 + i / 10).outputs
                  if isinstance(o, RenderedPart)]  # fmt: skip
    renderer.close()
    # 10 fps: parts of 2 frames, 5 per segment.
    assert [(p.part.msn, p.part.index) for p in parts] == [(m, i) for m in (2, 3) for i in range(5)]
    assert [p.start_wall for p in parts] == pytest.approx([1000.0 + 0.2 * k for k in range(10)])
    assert [p.first_wall for p in parts] == [500.0 + 2 * k for k in range(10)]
    assert [p.part.independent for p in parts] == [k % 5 == 0 for k in range(10)]
    assert parts[-1].part.last and parts[0].init.startswith(b"\0\0\0") and b"ftyp" in parts[0].init


# --- newest frames and the clock -------------------------------------------------------------


def _header(wall: float, width: int = 16, height: int = 8) -> FrameHeader:
    return FrameHeader(source_id="s", seq=0, pts=0.0, wall=wall, width=width, height=height)


def test_a_tile_takes_frames_that_fit_and_are_newer_and_counts_unshown_ones() -> None:
    assert fits_tile(_header(1.0), 16 * 8 * 3 // 2, 16, 8)
    assert not fits_tile(_header(1.0), 16 * 8, 16, 8), "short of pixels"
    assert not fits_tile(_header(1.0, 32, 8), 32 * 8 * 3 // 2, 16, 8), "another tile size"
    newest = NewestFrame()
    pixels = memoryview(bytes(16 * 8 * 3 // 2))
    assert newest.newer(_header(5.0), seed=True), "a seed fills an empty tile"
    assert not newest.take(_header(5.0), pixels, arrived=0.0)
    assert newest.take(_header(6.0), pixels, arrived=1.0), "replaced before any picture"
    assert not newest.newer(_header(7.0), seed=True), "a seed never replaces a live frame"
    assert not newest.newer(_header(5.5)), "nor does an older frame"
    assert newest.newer(_header(6.5))


def test_tiles_wait_then_turn_dead_and_show_their_newest_frame() -> None:
    empty, fresh, old = NewestFrame(), NewestFrame(), NewestFrame()
    pixels = memoryview(bytes(16 * 8 * 3 // 2))
    fresh.take(_header(1.0), pixels, arrived=9.0)
    old.take(_header(1.0), pixels, arrived=1.0)
    views, dead = tile_views((empty, fresh, old), 10.0, warming=True, dead_after=5.0)
    assert [v.kind for v in views] == [TileKind.WAITING, TileKind.LIVE, TileKind.DEAD]
    assert dead == 1 and views[1].serial == 1 and fresh.composed == 1
    views, dead = tile_views((empty,), 10.0, warming=False, dead_after=5.0)
    assert views == (DEAD,) and dead == 1


def test_the_clock_keeps_absolute_deadlines_and_skips_ticks_over_a_period_late() -> None:
    ticks = TickClock(25, start=100.0)
    assert ticks.wait(99.99) == (pytest.approx(0.01), 0)
    ticks.ticked()
    assert ticks.wait(100.05)[1] == 0, "late by less than a period: made at once"
    ticks.ticked()
    delay, missed = ticks.wait(101.01)  # tick 2 was due at 100.08: 23.25 periods late
    assert delay < 0 and missed == 23 and ticks.tick == 25


def test_the_meter_reports_pictures_a_second_and_a_smoothed_encode_time() -> None:
    meter = TickMeter()
    assert meter.fps(0.0) == 0.0
    for i in range(51):
        meter.note(i * 0.04, 10.0 if i == 0 else 20.0)
    assert meter.fps(2.0) == pytest.approx(25.0)
    assert meter.fps(3.5) == 0.0, "no picture for a while"
    assert 10.0 < meter.encode_ms < 20.0
