"""The baseline: one ``ffmpeg`` process doing a mosaic's work with ``xstack``.

Same inputs as Tessera's grabbers (the cached clips, looped with ``-stream_loop -1`` and read
at their own pace with ``-re``; from local files, where Tessera's grabbers read them over
loopback HTTP), each scaled to the tile size Tessera uses (FFmpeg's default bicubic scaler),
stacked into the same grid, encoded with the stitcher's libx264 settings (preset, ``crf`` 23,
``tune=zerolatency``, a closed 1 s GOP, no B-frames) into 1 s HLS segments. One thread
everywhere: decoders, filter graph, encoder.

With ``audio=i``, the output also carries input ``i``'s first audio stream encoded to AAC
(:data:`AAC_BITRATE`, 48 kHz stereo: a mosaic that carries one tile's sound). FFmpeg decodes
only the audio it maps: the other inputs' audio packets are discarded at the demuxer.

:class:`FfmpegRun` follows ``-progress`` to know how many seconds of output were made in a
window, so its CPU is divided by output seconds exactly as Tessera's is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from bench.cpu import cpu_seconds
from bench.media import require
from pipeline.consumers.encoder import EncoderSettings
from pipeline.runtime.procs import die_with_parent, stop_process
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.state.layouts import layout

AAC_BITRATE = "128k"
"""The mosaic's sound, when it has one: AAC-LC at 128 kbit/s."""


def xstack_args(
    inputs: Sequence[Path | str],
    out_dir: Path,
    *,
    size: tuple[int, int],
    preset: str,
    fps: int = 25,
    audio: int | None = None,
) -> list[str]:
    """The ffmpeg command line for a mosaic of ``inputs``, files or URLs (with the sound of
    input ``audio`` when given)."""
    n = len(inputs)
    grid = layout(n, *size)
    settings = EncoderSettings(width=size[0], height=size[1], fps=fps, preset=preset)
    args = [require("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-progress", "pipe:1", "-stats_period", "0.25"]  # fmt: skip
    for path in inputs:
        args += ["-threads", "1", "-re", "-stream_loop", "-1", "-i", str(path)]
    scaled = ";".join(f"[{i}:v]scale={r.w}:{r.h},setsar=1[v{i}]" for i, r in enumerate(grid.rects))
    places = "|".join(f"{r.x}_{r.y}" for r in grid.rects)
    stack = "".join(f"[v{i}]" for i in range(n))
    graph = (
        f"{scaled};{stack}xstack=inputs={n}:layout={places}:fill=black,"
        f"pad={size[0]}:{size[1]}:0:0:black[out]"
    )
    args += [
        "-filter_complex_threads", "1", "-filter_complex", graph, "-map", "[out]",
        "-r", str(fps), "-c:v", "libx264", "-threads", "1", "-preset", preset,
        "-tune", "zerolatency", "-crf", str(settings.crf), "-x264-params", settings.x264_params(),
    ]  # fmt: skip
    if audio is not None:
        if not 0 <= audio < n:
            raise ValueError(f"audio={audio}: give an input index from 0 to {n - 1}")
        args += ["-map", f"{audio}:a:0", "-c:a", "aac", "-b:a", AAC_BITRATE, "-ar", "48000",
                 "-ac", "2"]  # fmt: skip
    args += [
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "6",
        "-hls_flags", "delete_segments+independent_segments",
        "-hls_segment_filename", str(out_dir / "s%d.ts"), str(out_dir / "index.m3u8"),
    ]  # fmt: skip
    return args


class FfmpegRun:
    """One ffmpeg process; ``async with``. Stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.progress: list[tuple[float, float]] = []
        """(arrival time, seconds of output made) for every ``-progress`` report."""
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FfmpegRun:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._reader = asyncio.create_task(self._read(), name="ffmpeg progress")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            await stop_process(self.proc, 5.0, "ffmpeg")
        await cancel_and_wait(self._reader)
        self._reader = None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        while True:
            line = await stdout.readline()
            if not line:
                return
            if line.startswith(b"out_time_us="):
                with contextlib.suppress(ValueError):
                    made = int(line.split(b"=", 1)[1]) / 1e6
                    self.progress.append((time.monotonic(), made))
                    del self.progress[:-400]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """CPU-seconds of the process so far (0 once gone)."""
        return cpu_seconds(self.pid) or 0.0

    def made(self) -> float:
        """Seconds of output made so far."""
        return self.progress[-1][1] if self.progress else 0.0

    def output_rate(self, since: float, until: float) -> float:
        """Seconds of output per second of wall time between two monotonic times, from the
        progress reports nearest to them."""
        if len(self.progress) < 2:
            return 0.0
        first = min(self.progress, key=lambda p: abs(p[0] - since))
        last = min(self.progress, key=lambda p: abs(p[0] - until))
        if last[0] - first[0] <= 0:
            return 0.0
        return (last[1] - first[1]) / (last[0] - first[0])
