"""Source media for the mosaic cases: 1280x720 25 fps H.264 clips made once with Debian's
``ffmpeg`` and cached, served over loopback HTTP as looping files, and the checks that read
pictures back (tile colours).

The clips are what a camera sends: ``testsrc2`` with temporal noise (so every frame differs,
as sensor noise makes it), 3 Mbit/s, a keyframe every 2 s, no B-frames, MP4 with the index at
the front (``+faststart``) so FFmpeg knows the duration without seeking and the grabber plays
the file again when it ends. Four variants (hue turned by 90°) so neighbouring tiles differ.

With sound (:func:`clips_with_sound`, case 10): the same pictures and AAC stereo at 48 kHz whose
level keeps moving, as programme sound does (:func:`programme_sound`), so meters move and no
alarm is due. The alarm script (:func:`alarm_script`, :func:`alarm_clip`): a looping clip that
goes black, freezes and goes silent at known source times, again and again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from bench.core import CaseSkipped
from pipeline.state.layouts import layout

CLIP_SECONDS = 10
CLIP_VARIANTS = 4
CLIP_SIZE = (1280, 720)
CLIP_FPS = 25
CLIP_BITRATE = "3M"
CLIP_GOP = 50
NOISE = 2
SOUND_RATE = 48000
SOUND_BITRATE = "128k"


def require(tool: str) -> str:
    """Path of ``tool``, or CaseSkipped saying how to get it."""
    found = shutil.which(tool)
    if found is None:
        raise CaseSkipped(f"{tool} not found: `just bench` installs it (apt-get install {tool})")
    return found


def clip_args(hue: int, out: Path, sound: str = "") -> list[str]:
    """The ffmpeg command that makes one clip; with ``sound`` (an lavfi audio source), with
    that sound as AAC stereo."""
    w, h = CLIP_SIZE
    source = f"testsrc2=size={w}x{h}:rate={CLIP_FPS},noise=alls={NOISE}:allf=t,hue=h={hue}"
    args = [require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", source]  # fmt: skip
    if sound:
        args += ["-f", "lavfi", "-i", sound]
    args += [
        "-t", str(CLIP_SECONDS),
        "-c:v", "libx264", "-preset", "veryfast", "-b:v", CLIP_BITRATE, "-maxrate", CLIP_BITRATE,
        "-bufsize", "8M", "-g", str(CLIP_GOP), "-bf", "0", "-pix_fmt", "yuv420p",
    ]  # fmt: skip
    if sound:
        args += ["-c:a", "aac", "-b:a", SOUND_BITRATE, "-ar", str(SOUND_RATE), "-ac", "2"]
    return [*args, "-movflags", "+faststart", str(out)]


def programme_sound(variant: int) -> str:
    """An lavfi source of stereo sound whose level never rests: a tone per channel (a pitch
    per variant and channel) whose amplitude swings between 0.02 and 0.2 (-34 to -14 dBFS
    peaks) at 0.7 Hz on the left and 0.5 Hz on the right. Short-term loudness stays near
    -19 LUFS, inside the loudness alarm's range, and far above silence: no alarm is due,
    and every meter moves."""
    left = 220 * (variant + 2)
    right = left * 3 // 2

    def channel(pitch: int, swing: float) -> str:
        return f"0.2*sin(2*PI*{pitch}*t)*(0.55+0.45*sin(2*PI*{swing}*t))"

    return f"aevalsrc=exprs={channel(left, 0.7)}|{channel(right, 0.5)}:s={SOUND_RATE}"


def _made(cache_dir: Path, kind: str, args_of: Callable[[int, Path], list[str]]) -> list[Path]:
    """The :data:`CLIP_VARIANTS` clips ``args_of(variant, path)`` makes, made on first use (a
    few seconds each) and cached by their recipe."""
    recipe = hashlib.sha256(repr(args_of(0, Path("x"))[3:]).encode()).hexdigest()[:10]
    folder = cache_dir / f"{kind}-{recipe}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant in range(CLIP_VARIANTS):
        path = folder / f"clip{variant}.mp4"
        if not path.exists():
            partial = path.with_suffix(".part.mp4")
            subprocess.run(args_of(variant, partial), check=True, timeout=300)
            partial.rename(path)
        paths.append(path)
    return paths


def clips(cache_dir: Path) -> list[Path]:
    """The clip variants (pictures only)."""
    return _made(cache_dir, "clips", lambda variant, out: clip_args(variant * 90, out))


def clips_with_sound(cache_dir: Path) -> list[Path]:
    """The clip variants with programme sound (:func:`programme_sound`)."""
    return _made(
        cache_dir,
        "avclips",
        lambda variant, out: clip_args(variant * 90, out, programme_sound(variant)),
    )


# -- the alarm script ---------------------------------------------------------------------------

ALARM_SECONDS = 26.0
ALARM_CYCLE = 2.0


@dataclass(frozen=True)
class Stretch:
    """From ``start`` to ``end`` s of source time the clip is ``kind``: black, freeze or
    silence."""

    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class AlarmScript:
    """A looping clip's stretches; it is ``seconds`` long."""

    seconds: float
    stretches: tuple[Stretch, ...]

    def count(self, kind: str) -> int:
        """Stretches of ``kind`` in one pass."""
        return sum(s.kind == kind for s in self.stretches)

    def error(self, kind: str, onset: float) -> float | None:
        """Seconds from the start of the nearest stretch of ``kind`` to ``onset`` (source time,
        in any pass of the loop); None when the script has no stretch of that kind."""
        half = self.seconds / 2
        gaps = [
            (onset - s.start + half) % self.seconds - half for s in self.stretches if s.kind == kind
        ]
        return min(gaps, key=abs) if gaps else None


def alarm_script(seconds: float = ALARM_SECONDS, cycle: float = ALARM_CYCLE) -> AlarmScript:
    """Every ``cycle`` s but the first (the loop's seam stays normal): the picture is black
    (odd cycles) or frozen (even ones) from 0.2 to 1.4 s into the cycle, and the sound is
    silent from 0.6 to 1.6 s. Each stretch outlasts the 0.5 s debounce by 0.5 s or more, and
    is followed by at least 0.4 s of normal content, so that its alarm clears first."""
    stretches: list[Stretch] = []
    for c in range(1, int(seconds // cycle)):
        base = c * cycle
        picture = "black" if c % 2 else "freeze"
        stretches.append(Stretch(picture, round(base + 0.2, 3), round(base + 1.4, 3)))
        stretches.append(Stretch("silence", round(base + 0.6, 3), round(base + 1.6, 3)))
    return AlarmScript(seconds, tuple(stretches))


def alarm_clip(cache_dir: Path, script: AlarmScript) -> Path:
    """The MPEG-TS clip of ``script`` (320x180 moving pictures, a 1 kHz tone at -20 dBFS
    per channel; ``tests/alarmmedia.py``, the alarm tests' media), made on first use and
    cached by the script and that module's text."""
    from tests import alarmmedia

    maker = Path(alarmmedia.__file__).read_bytes()
    recipe = hashlib.sha256(repr(script).encode() + maker).hexdigest()[:10]
    path = cache_dir / f"alarms-{recipe}.ts"
    if not path.exists():
        spans = [alarmmedia.Span(s.kind, s.start, s.end) for s in script.stretches]
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(alarmmedia.scripted_clip(script.seconds, spans))
        partial.rename(path)
    return path


def stream_starts(path: Path) -> dict[str, float]:
    """Source time (s) of the first picture (``video``) and sample (``audio``) of a file: a
    grabber's source times are the file's timestamps, so a scripted time ``t`` is at
    ``start + t``."""
    with av.open(str(path)) as container:
        return {
            stream.type: float(stream.start_time * stream.time_base)
            for stream in container.streams
            if stream.type in ("video", "audio")
            and stream.start_time is not None
            and stream.time_base is not None
        }


def vod_playlist(segment: str, seconds: float) -> str:
    """An ended HLS playlist of one segment: a grabber paces it by its timestamps and plays it
    again when it ends."""
    return (
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{seconds:.0f}\n"
        f"#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{seconds:.3f},\n{segment}\n#EXT-X-ENDLIST\n"
    )


def tile_mean(picture: npt.NDArray[np.uint8], index: int, n: int) -> tuple[int, int, int]:
    """Mean RGB of the upper part of tile ``index`` of ``n`` (the name strip is at the bottom)."""
    height, width = picture.shape[:2]
    grid = layout(n, width, height)
    r = grid.rects[index]
    h = r.h * 6 // 10
    region = picture[r.y + 4 : r.y + h, r.x + 4 : r.right - 4]
    r, g, b = region.reshape(-1, 3).mean(axis=0)
    return int(r), int(g), int(b)


def near(actual: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    """Each channel within ``tolerance`` (H.264 at mosaic quality, the moving marker)."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


RENDITIONS = ((1920, 1080, "5M"), (1280, 720, "3M"), (640, 360, "1M"), (320, 180, "300k"))
"""The rendition ladder of the master playlists (size, bit rate), biggest first as encoders
list them (what ffmpeg given a master decodes: its first video stream)."""
MASTER_SECONDS = 20
"""Length of the master playlists' VOD: longer than an ffmpeg sample, which does not loop."""


@dataclass(frozen=True)
class Master:
    """One HLS master playlist with its renditions, as flat files: ``files`` (name → path) to
    serve under one folder, the master's name, and each rendition's media playlist name."""

    name: str
    files: dict[str, Path]
    variants: dict[tuple[int, int], str]


def master_args(hue: int, folder: Path, prefix: str) -> list[str]:
    """The ffmpeg command that makes the renditions of one master (one encode of each, a
    ``prefix``-named flat set of files in ``folder``)."""
    w, h = RENDITIONS[0][:2]
    source = f"testsrc2=size={w}x{h}:rate={CLIP_FPS},noise=alls={NOISE}:allf=t,hue=h={hue}"
    n = len(RENDITIONS)
    split = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))
    scales = ";".join(f"[s{i}]scale={rw}:{rh}[v{i}]" for i, (rw, rh, _) in enumerate(RENDITIONS))
    args = [require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", source, "-t", str(MASTER_SECONDS),
            "-filter_complex", f"{split};{scales}"]  # fmt: skip
    for i, (_, _, rate) in enumerate(RENDITIONS):
        args += ["-map", f"[v{i}]", f"-b:v:{i}", rate, f"-maxrate:v:{i}", rate]
    args += [
        "-c:v", "libx264", "-preset", "veryfast", "-g", str(CLIP_GOP), "-bf", "0",
        "-bufsize", "8M", "-pix_fmt", "yuv420p",
        "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(folder / f"{prefix}_v%v_%d.ts"),
        "-master_pl_name", f"{prefix}_master.m3u8",
        "-var_stream_map", " ".join(f"v:{i}" for i in range(n)),
        str(folder / f"{prefix}_v%v.m3u8"),
    ]  # fmt: skip
    return args


def masters(cache_dir: Path) -> list[Master]:
    """:data:`CLIP_VARIANTS` master playlists (a hue each) of the :data:`RENDITIONS` ladder,
    1080p to 180p H.264 at 25 fps, made on first use (a minute or two) and cached."""
    recipe = hashlib.sha256(repr(master_args(0, Path("x"), "m")[3:]).encode()).hexdigest()[:10]
    folder = cache_dir / f"masters-{recipe}"
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for variant in range(CLIP_VARIANTS):
        prefix = f"m{variant}"
        master = folder / f"{prefix}_master.m3u8"
        if not master.exists():
            subprocess.run(master_args(variant * 90, folder, prefix), check=True, timeout=900)
        files = {p.name: p for p in folder.glob(f"{prefix}_*")}
        variants = {(w, h): f"{prefix}_v{i}.m3u8" for i, (w, h, _) in enumerate(RENDITIONS)}
        made.append(Master(master.name, files, variants))
    return made
