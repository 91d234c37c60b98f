"""Case 9, low latency: a mosaic of four stamping cameras (:mod:`bench.camera`, as case 4) played
in headless Chromium over Low-Latency HLS and over WebRTC, what each WebRTC viewer costs the
stitcher, and what a thousand held playlist requests cost the gateway.

- **Glass-to-glass in a browser** (:mod:`bench.browser`): the real viewer page
  ``/view/<fp>?via=hls`` (hls.js, low-latency mode) and ``?via=webrtc`` (WHEP); for every frame
  the page presents, display time (``requestVideoFrameCallback``'s expected display time) minus
  the capture time burned into each tile. Targets: LL-HLS p50 ≤ 1.0 s and p95 ≤ 1.5 s;
  WebRTC p95 ≤ 0.4 s. The split comes from following the same playlist as case 4 does for a
  few seconds first (capture → composed → part listed); the rest is the player's.
- **CPU per extra WebRTC viewer**: the stitcher's CPU with one viewer against 1 + N, in
  interleaved windows. The viewers are aiortc peers that count frames without decoding them
  (:class:`_Viewer`): the runner stays light, and the stitcher cannot tell.
- **Held playlist requests** (:mod:`bench.holdload`), 1,000 keep-alive connections on one
  gateway: (a) *waiting*: all held on a part about 2.4 s ahead; the stack host's CPU (gateway,
  controller, projector) while they wait, against the same host with none held, interleaved
  windows of the same length; target ≤ 5 % of a core more. (b) *following*: each asks for the
  next part and again once answered, as players do: wake-up latency (the runner's own watch
  of KV ``manifests`` sees the part → the held request is answered; requests sent before the
  part came only) and the host's CPU for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, rtcrtpreceiver

from bench import browser, mosaicrun
from bench.camera import CameraServer
from bench.core import CaseSkipped, Context, Result, fmt, median, not_run, percentile
from bench.cpu import CpuWindow, Proc
from bench.holdload import HeldPlayers
from bench.play import Pictures, follow_pictures, parse_low_latency
from bench.stack import StackHost, Watchers, until
from pipeline.nats.topology import MANIFESTS
from pipeline.segments import manifest
from pipeline.segments.uris import PartRef
from pipeline.state.layouts import Layout, layout
from pipeline.webrtc.h264 import high_profile_preferences

NAME = "low_latency"
TITLE = "9. Low latency (LL-HLS and WebRTC in Chromium, held reloads)"
TARGET_HLS_P50_S = 1.0
TARGET_HLS_P95_S = 1.5
TARGET_WEBRTC_P95_S = 0.4
TARGET_HELD_CORE_PCT = 5.0
SIZE = (1280, 720)
CAMERAS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30)}  # fmt: skip
FPS = 25
HELD = 1000
PARTS_PER_SEGMENT = 5
"""1 s segments of 0.2 s parts (the shipped settings)."""
SETTLE_S = 0.3
"""After the held requests are written, before their CPU window opens (the gateway reads
and parks them)."""
HOLD_WINDOW_S = 1.5
"""The idle windows; the held ones are as long, unless writing the requests took longer."""
HOLD_UNTIL_S = SETTLE_S + HOLD_WINDOW_S
"""Held windows close this long after the requests began to go out: before their part
(:func:`_far`) can come, 2.0 s at the earliest."""


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Result]:
    names = list(CAMERAS)
    grid = layout(len(names), *SIZE)
    results: list[Result] = []
    with CameraServer(CAMERAS, size=(640, 360), fps=FPS) as cameras:
        pattern = f"http://127.0.0.1:{cameras.port}/{{{','.join(names)}}}[n].ts"
        async with StackHost(ctx.work_dir, "low-latency", {}) as host, Watchers(host) as watchers:
            fp = await host.create(pattern, size=f"{SIZE[0]}x{SIZE[1]}")
            watchers.fps.add(fp)
            sources = mosaicrun.sources_of(pattern, SIZE)

            def running() -> bool:
                stats = [host.beats.grabber(sid) for sid in sources]
                return host.beats.stitcher_ready(fp) and all(s and s.connected for s in stats)

            await until(running, 60, "the mosaic of 4 cameras to run")
            text = await host.playlist(fp)
            if "#EXT-X-PART-INF" not in text:
                raise CaseSkipped("the mosaic's playlist has no parts: not Low-Latency HLS")
            split = await follow_pictures(host, fp, grid, ctx.pick(4.0, 10.0), FPS)
            ctx.progress(
                f"playlist followed: capture → composed {fmt(_med_composed(split))} s, "
                f"→ part listed {fmt(median(split.to_part()))} s (p50)"
            )
            results += await _browsers(ctx, host, fp, grid, split)
            results += await _viewer_cpu(ctx, host, fp)
            results += await _held(ctx, host, fp)
    return results


def _med_composed(split: Pictures) -> float:
    return median([c - cap for c, cap in zip(split.composed, split.captured, strict=True)])


# -- glass-to-glass in Chromium ------------------------------------------------------------------


async def _browsers(
    ctx: Context, host: StackHost, fp: str, grid: Layout, split: Pictures
) -> list[Result]:
    try:
        from playwright.async_api import Error as PlaywrightError
    except ImportError:
        reason = "playwright is not installed: pip install -e '.[dev]'"
        return [_not_run_hls(reason), _not_run_webrtc(reason)]
    warmup, seconds = ctx.pick(3.0, 5.0), ctx.pick(8.0, 30.0)
    results: list[Result] = []
    try:
        async with browser.chromium() as chromium:
            for via in ("hls", "webrtc"):
                url = f"{host.gateway}/view/{fp}?via={via}"
                try:
                    async with browser.watch(chromium, url, browser.probe_spec(grid)) as page:
                        started = await page.wait_for_stamps(45)
                        ctx.progress(f"?via={via}: first stamped frame after {started:.1f} s; "
                                     f"measuring {seconds:g} s")  # fmt: skip
                        await asyncio.sleep(warmup)
                        shown, counters = await page.measure(seconds)
                        title = await _latency_title(page)
                        requests = dict(page.requests)
                except (TimeoutError, PlaywrightError) as exc:
                    # The page did not play: say so, and measure the rest.
                    why = f"?via={via}: {exc}"[:300]
                    results += [_failed_hls(why)] if via == "hls" else [_failed_webrtc(why)]
                    continue
                info = {"page": url, "started_s": started, "seconds": seconds,
                        "warmup_s": warmup, "requests": requests, "page_says": title,
                        **counters}  # fmt: skip
                if via == "hls":
                    results += _hls_rows(shown, info, split)
                else:
                    results += _webrtc_rows(shown, info, split)
    except FileNotFoundError as exc:
        return [_not_run_hls(str(exc)), _not_run_webrtc(str(exc))]
    return results


async def _latency_title(page: browser.Watch) -> str:
    with contextlib.suppress(Exception):
        return str(await page.page.get_attribute("#latency", "title") or "")
    return ""


def _not_run_hls(reason: str) -> Result:
    return not_run(NAME, "ll_hls_browser_p95", "s", reason, target=TARGET_HLS_P95_S)


def _not_run_webrtc(reason: str) -> Result:
    return not_run(NAME, "webrtc_browser_p95", "s", reason, target=TARGET_WEBRTC_P95_S)


def _failed_hls(reason: str) -> Result:
    return Result(NAME, "ll_hls_browser_p95", None, "s", target=TARGET_HLS_P95_S, ok=False,
                  note=f"did not play: {reason}")  # fmt: skip


def _failed_webrtc(reason: str) -> Result:
    return Result(NAME, "webrtc_browser_p95", None, "s", target=TARGET_WEBRTC_P95_S, ok=False,
                  note=f"did not play: {reason}")  # fmt: skip


def _details(
    shown: browser.Shown, info: dict[str, Any], label: str, target: float
) -> dict[str, Any]:
    return {
        **info,
        "frames": shown.frames,
        "samples": len(shown.latencies),
        "unreadable_tiles": shown.unreadable,
        "dropped_frames": shown.dropped,
        "engines": shown.engines,
        "clock_skew_ms": shown.clock_skew_ms,
        "callback_after_display_ms": shown.callback_after_shown_ms,
        "latency_samples_ms": [round(v * 1000, 1) for v in shown.latencies],
        "label": label,
        "target_ms": target * 1000,
    }


def _played(shown: browser.Shown, engine: str) -> str:
    """ "" when most frames came from ``engine``, else what played them."""
    if not shown.frames:
        return "no frame was shown"
    top = max(shown.engines, key=lambda k: shown.engines[k])
    return "" if top == engine else f"the page played with {top or 'nothing'}, not {engine}"


def _hls_rows(shown: browser.Shown, info: dict[str, Any], split: Pictures) -> list[Result]:
    wrong = _played(shown, "mse")
    p50, p95 = percentile(shown.latencies, 50), percentile(shown.latencies, 95)
    composed, listed = _med_composed(split), median(split.to_part())
    requests = info["requests"]
    note = (
        f"Chromium + hls.js, /view?via=hls ({info.get('via') or '?'}); p50 {fmt(p50)} s = capture "
        f"→ composed {fmt(composed)} s + → part listed {fmt(listed - composed)} s + the player "
        f"(hold-back, fetch, decode, display) {fmt(p50 - listed)} s; "
        f"{len(shown.latencies)} tile samples of {shown.frames} frames, "
        f"{requests.get('blocking reload', 0)} blocking reloads, {requests.get('part', 0)} parts"
    )
    if composed > 0.3:
        note += (f"; capture → composed: the grabber paces a live camera {fmt(composed)} s "
                 "behind, by its first frame, which the open had buffered (case 4)")  # fmt: skip
    details = _details(shown, info, "Chromium LL-HLS: capture → displayed", TARGET_HLS_P95_S)
    details["split_p50_s"] = {"capture_to_composed": composed, "capture_to_part_listed": listed}
    ok = False if wrong else None
    return [
        Result(NAME, "ll_hls_browser_p50", p50, "s", target=TARGET_HLS_P50_S, ok=ok,
               note=wrong or note, details=details),
        Result(NAME, "ll_hls_browser_p95", p95, "s", target=TARGET_HLS_P95_S, ok=ok,
               note=wrong or "the same frames"),
    ]  # fmt: skip


def _webrtc_rows(shown: browser.Shown, info: dict[str, Any], split: Pictures) -> list[Result]:
    wrong = _played(shown, "webrtc")
    p50, p95 = percentile(shown.latencies, 50), percentile(shown.latencies, 95)
    composed = _med_composed(split)
    note = (
        f"Chromium, /view?via=webrtc ({info.get('via') or '?'}); p50 {fmt(p50)} s = capture → "
        f"composed {fmt(composed)} s + encode, RTP, jitter buffer, decode, display "
        f"{fmt(p50 - composed)} s; {len(shown.latencies)} tile samples of {shown.frames} frames "
        f"({shown.dropped} skipped)"
    )
    if composed > 0.3:
        note += (f"; next: the {fmt(composed)} s to composition is the grabber pacing a live "
                 "camera by its first frame, which the open had buffered (case 4)")  # fmt: skip
    details = _details(shown, info, "Chromium WebRTC: capture → displayed", TARGET_WEBRTC_P95_S)
    ok = False if wrong else None
    return [
        Result(NAME, "webrtc_browser_p95", p95, "s", target=TARGET_WEBRTC_P95_S, ok=ok,
               note=wrong or note, details=details),
        Result(NAME, "webrtc_browser_p50", p50, "s", note=wrong or "the same frames"),
    ]  # fmt: skip


# -- CPU per WebRTC viewer ----------------------------------------------------------------------


class _CountingDecoder:
    """Stands in for aiortc's H.264 decoder: counts frames, decodes nothing."""

    def __init__(self) -> None:
        self.frames = 0

    def decode(self, encoded_frame: Any) -> list[Any]:
        self.frames += 1
        return []


@contextlib.contextmanager
def _counting_decoders() -> Iterator[list[_CountingDecoder]]:
    """While inside, aiortc receivers in this process count frames instead of decoding."""
    made: list[_CountingDecoder] = []
    original = getattr(rtcrtpreceiver, "get_decoder")  # noqa: B009 - not exported, patched

    def make(codec: Any) -> _CountingDecoder:
        made.append(_CountingDecoder())
        return made[-1]

    setattr(rtcrtpreceiver, "get_decoder", make)  # noqa: B010 - what the receiver looks up
    try:
        yield made
    finally:
        setattr(rtcrtpreceiver, "get_decoder", original)  # noqa: B010


class _Viewer:
    """A WHEP viewer of a mosaic (aiortc, recvonly, offering the stitcher's H.264 profiles)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(high_profile_preferences())
        self.location = ""

    async def connect(self, http: httpx.AsyncClient, fp: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for _ in range(20):
            got = await http.post(f"/play/{fp}/whep", content=self.pc.localDescription.sdp,
                                  headers={"Content-Type": "application/sdp"})  # fmt: skip
            if got.status_code != 503:
                break
            await asyncio.sleep(float(got.headers.get("retry-after", "1")))
        if got.status_code != 201:
            raise RuntimeError(f"POST /play/{fp}/whep answered {got.status_code}: {got.text}")
        self.location = got.headers["location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=got.text, type="answer"))

    async def close(self, http: httpx.AsyncClient) -> None:
        if self.location:
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(self.location)
        await self.pc.close()


async def _viewer_cpu(ctx: Context, host: StackHost, fp: str) -> list[Result]:
    extra, rounds, window = ctx.pick(3, 7), ctx.pick(2, 4), ctx.pick(3.0, 5.0)
    assert host.http is not None
    stitchers = [p for p in await host.workers("stitcher") if p.target == fp]
    if len(stitchers) != 1:
        return [not_run(NAME, "webrtc_cpu_per_viewer", "cores", f"{len(stitchers)} stitchers")]
    one: list[float] = []
    many: list[float] = []
    viewers: list[_Viewer] = []
    with _counting_decoders() as decoders:
        try:
            viewers.append(_Viewer())
            await viewers[0].connect(host.http, fp)
            await _receiving(decoders, 1)
            for _ in range(rounds):
                one.append(await _cpu(stitchers, window))
                more = [_Viewer() for _ in range(extra)]
                viewers += more
                await asyncio.gather(*(v.connect(host.http, fp) for v in more))
                await _receiving(decoders, 1 + extra)
                many.append(await _cpu(stitchers, window))
                await asyncio.gather(*(v.close(host.http) for v in more))
                del viewers[1:], decoders[1:]
        finally:
            for viewer in viewers:
                await viewer.close(host.http)
    per_viewer = (median(many) - median(one)) / extra
    ctx.progress(f"stitcher: {fmt(median(one))} cores with 1 WebRTC viewer, "
                 f"{fmt(median(many))} with {1 + extra}")  # fmt: skip
    return [
        Result(NAME, "webrtc_cpu_per_viewer", per_viewer, "cores",
               note=f"the stitcher's CPU with {1 + extra} WebRTC viewers against 1, "
               f"{rounds} interleaved {window:g} s windows: {fmt(median(one))} → "
               f"{fmt(median(many))} cores (one encode, packetized per viewer)",
               details={"one": one, "many": many, "extra_viewers": extra}),
    ]  # fmt: skip


async def _receiving(decoders: list[_CountingDecoder], viewers: int) -> None:
    await until(lambda: sum(d.frames > 0 for d in decoders) >= viewers, 20,
                f"{viewers} WebRTC viewers to receive frames")  # fmt: skip


async def _cpu(procs: list[Proc], seconds: float) -> float:
    window = CpuWindow(procs).begin()
    await asyncio.sleep(seconds)
    window.end()
    return window.spent() / window.seconds


# -- held playlist requests ----------------------------------------------------------------------


async def _held(ctx: Context, host: StackHost, fp: str) -> list[Result]:
    rounds, follow_s = ctx.pick(3, 8), ctx.pick(5.0, 15.0)
    gateway = [Proc(host.pid, "host")]
    runner = Proc(os.getpid(), "runner")
    seen: dict[PartRef, float] = {}
    assert host.nc is not None
    kv = await host.nc.jetstream().key_value(MANIFESTS.name)
    watcher: Any = await kv.watch(fp)

    async def note_parts() -> None:
        async for entry in watcher:
            if entry is not None and entry.value and manifest.is_cmaf(entry.value):
                last = manifest.decode(entry.value).state.last_part
                if last is not None:
                    seen.setdefault(last, time.time())

    noting = asyncio.create_task(note_parts(), name="bench manifest watch")
    idle_cpu = held_cpu = idle_s = held_s = 0.0
    early = refused = 0
    burst: list[float] = []
    try:
        async with HeldPlayers(host.gateway, fp, HELD) as players:
            ctx.progress(f"{HELD} connections open; following parts for {follow_s:g} s")
            window = CpuWindow([*gateway, runner]).begin()
            await players.follow(await _hint(host, fp), follow_s)
            window.end()
            follow_cores = window.spent(gateway) / window.seconds
            client_cores = window.spent([runner]) / window.seconds
            followed = list(players.answers)
            for _ in range(rounds):
                window = CpuWindow(gateway).begin()
                await asyncio.sleep(HOLD_WINDOW_S)
                window.end()
                idle_cpu, idle_s = idle_cpu + window.spent(), idle_s + window.seconds
                far = await _far(host, fp)
                players.answers.clear()
                asked = time.monotonic()
                answers = await players.send_all(far)
                await asyncio.sleep(SETTLE_S)
                window = CpuWindow(gateway).begin()
                # Closed before the part can come, however long writing the requests took.
                await asyncio.sleep(max(0.0, asked + HOLD_UNTIL_S - time.monotonic()))
                window.end()
                closed = time.time()
                if window.seconds >= 0.5:
                    held_cpu, held_s = held_cpu + window.spent(), held_s + window.seconds
                await asyncio.wait_for(answers, 10)
                early += sum(a.answered_wall < closed for a in players.answers)
                refused += sum(a.status != 200 for a in players.answers)
                if far in seen:
                    burst += [a.answered_wall - seen[far] for a in players.answers]
    finally:
        noting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await noting
        with contextlib.suppress(Exception):
            await watcher.stop()
    cores = (idle_cpu / idle_s, held_cpu / held_s if held_s else math.nan)
    following = (follow_cores, client_cores, follow_s)
    return _held_rows(followed, seen, following, cores, early, refused, burst, rounds)


async def _hint(host: StackHost, fp: str) -> PartRef:
    hint = parse_low_latency(await host.playlist(fp)).hint
    if hint is None:
        raise RuntimeError("the playlist has no preload hint")
    return hint


async def _far(host: StackHost, fp: str) -> PartRef:
    """A part that comes 2.0-2.4 s from now: two segments past the one being built, one part
    further on (at most ``_HLS_msn`` + 2, the gateway's limit, and within the Advance Part
    Limit). Asked once the segment being built has a part, so that it is listed."""
    for _ in range(20):
        hint = await _hint(host, fp)
        if hint.part >= 1:
            return PartRef(hint.msn + 2, min(PARTS_PER_SEGMENT - 1, hint.part + 1))
        await asyncio.sleep(0.05)
    raise RuntimeError("the playlist's segment being built never had a part")


def _held_rows(
    followed: list[Any], seen: dict[PartRef, float], following: tuple[float, float, float],
    cores: tuple[float, float], early: int, refused: int, burst: list[float], rounds: int,
) -> list[Result]:  # fmt: skip
    idle, held = cores
    follow_cores, client_cores, follow_s = following
    answered = [a for a in followed if a.status == 200]
    # Held: sent before the runner's watch saw the part (else answered at once, not woken).
    woken = [a for a in answered if a.asked in seen and a.sent_wall < seen[a.asked]]
    wake = [a.answered_wall - seen[a.asked] for a in woken]
    firsts: dict[PartRef, float] = {}
    for a in woken:
        firsts[a.asked] = min(firsts.get(a.asked, a.answered_wall), a.answered_wall)
    first = [at - seen[part] for part, at in firsts.items()]
    problems = []
    if early:
        problems.append(f"{early} answered inside the window (not held)")
    if refused:
        problems.append(f"{refused} not 200")
    ms = [round(b * 1000, 2) for b in burst]
    return [
        Result(NAME, "held_1000_cpu", (held - idle) * 100, "% of a core",
               target=TARGET_HELD_CORE_PCT, ok=False if early or refused else None,
               note=f"{HELD} blocking reloads held on a part 2.0-2.4 s ahead: the "
               f"host (gateway + controller + projector) {held * 100:.1f} % of a core while "
               f"they wait against {idle * 100:.1f} % idle ({rounds} interleaved "
               f"{HOLD_WINDOW_S:g} s windows)" + (f"; {', '.join(problems)}" if problems else ""),
               details={"idle_cores": idle, "held_cores": held, "early": early,
                        "refused": refused}),
        Result(NAME, "held_wakeup_p50", percentile(ms, 50), "ms",
               note=f"the part those {HELD} wait for appears in KV (the runner's watch) → "
               f"each of them answered, {rounds} rounds: one wake-up, then {HELD} answers "
               "written one after another (the last waits for the others)",
               details={"latency_samples_ms": ms,
                        "label": f"{HELD} held reloads: part listed → answered"}),
        Result(NAME, "held_wakeup_p95", percentile(ms, 95), "ms", note="the same requests"),
        Result(NAME, "follow_1000_cpu", follow_cores * 100, "% of a core",
               note=f"{HELD} players following part to part for {follow_s:g} s (each asks for "
               f"the next part, and again when answered): {len(answered) / follow_s:,.0f} "
               f"answers/s; {len(woken) / max(1, len(answered)):.0%} of requests were held "
               f"until their part came, woken p50 {fmt(percentile(wake, 50) * 1000)} ms, p95 "
               f"{fmt(percentile(wake, 95) * 1000)} ms (first answer per part p50 "
               f"{fmt(percentile(first, 50) * 1000)} ms)"
               + ("; the others asked after their part came (answering them all took longer "
                  "than a part)" if len(woken) < 0.9 * len(answered) else "")
               + f"; the clients in the runner {client_cores:.2f} cores",
               details={"follow_cores": follow_cores, "client_cores": client_cores,
                        "answers": len(answered), "held": len(woken),
                        "wake_ms": [round(w * 1000, 2) for w in wake[:20000]],
                        "first_answer_ms": [round(f * 1000, 2) for f in first]}),
    ]  # fmt: skip
