"""Case 10, monitoring (issue 17): how late an alarm comes, what monitoring costs a 16-tile
mosaic, and case 1's comparison with ffmpeg when the mosaic carries one tile's sound.

**Alarm latency** (``alarm_latency_<kind>_p95``, target ≤ 0.6 s for black, freeze and
silence). Four sources play the alarm script (:func:`bench.media.alarm_script`: a 26 s clip,
looped, that goes black or freezes, and goes silent, every 2 s; 320x180 H.264 + AAC stereo
from ``tests/alarmmedia.py``, served as ended HLS playlists) in a 4-tile mosaic created with
``alarms=black:0.5,freeze:0.5,silence:0.5``, the shortest holds. The runner subscribes to
``events.source.>`` and notes, on its own wall clock (same machine as the grabbers), when each
``alarm raised`` arrives: latency = arrival − (``onset_wall`` + hold), with hold 0.5 s. The
grabbers raise a condition once it has lasted the 0.5 s detection debounce, so onset + hold is
the earliest an alarm can come; the rest is the detection path (the next picture or reading
handed on, the event loop, the append to JetStream with its ack) and delivery. The event is
measured, not a mosaic's display of it: the event is what every mosaic, dashboard and the
projection learn the alarm from, and a hold of 0.5 s adds nothing after it (a mosaic with a
longer hold shows it that much later, by design). Silence is read in 100 ms windows, so the
reading that raises it comes up to a window after onset + hold. Counted: alarms whose onset
falls in whole passes of the clip after the mosaic ran (quick: one pass, ≈ 24 black, 24
freeze and 48 silence onsets; full: two passes). Split in the note (medians): detection =
``at`` (the grabber's clock when it made the event) − onset − hold; append + delivery =
arrival − ``at``; the same latency from the scripted start instead of the detected onset (the
onset's error added: a paced source's source and wall clocks advance together); and the
projection (KV ``alarms``, what the gateway and the stitchers read) showing it after the
event, with how many it showed.

**Onset accuracy** (``alarm_onset_error_p95``, no target): the onset each alarm gives in source
time against the start of the nearest scripted stretch of its kind (in the clip's timestamps,
from its first picture or sample; modulo the clip's length, whatever pass it was in). Black and
freeze should be exact to the frame; silence starts at the first all-silent window, about
0.1 s late (the AAC frame that ends the tone spills into the window where it stops). An onset
more than 0.25 s from every stretch, or an alarm of another kind (loudness, no-audio, lost),
is a false alarm, counted in the note, with how many of the alarm events received the
``EVENTS`` stream stored.

**CPU share of monitoring** (``monitoring_cpu_share_16_tiles``, target ≤ 10 %). Sixteen
1280x720 25 fps H.264 sources with AAC stereo (:func:`bench.media.clips_with_sound`) in a
16-tile 1280x720 mosaic, on two stack hosts run side by side with case 1's settings (veryfast,
crf 23): *on*, monitoring as shipped (``TESSERA_MONITORING`` true, default alarms,
``audio=off``: audio decode + meters + detectors + alarm events in the grabbers, and whatever
the stitcher draws for them: meters, borders), and *off* (``TESSERA_MONITORING=false``,
``alarms=off``, ``audio=off``: no audio decoded, nothing measured or drawn). CPU-seconds per
output second of every Tessera process of the measured host (:mod:`bench.mosaicrun`), in
alternating windows; share = (on − off) / on per round, the median of rounds. The note splits
the difference by process (grabbers, stitcher, nats-server, host) and the grabbers' part per
source into their threads (decode, meter, probes) and their event loops (messages, alarms).

**Mosaic sound** (``mosaic_audio_cpu_share``, no target): the same mosaic on the *on* host with
``audio=0`` (the first tile's sound as an AAC track) against ``audio=off``: what carrying one
tile's sound costs (resample, AAC encode, mux), as a share of the mosaic with it. Only when
the output has an audio track (its CMAF init section declares ``mp4a``); otherwise "not run".

**Case 1 with sound** (``cpu_ratio_16_tiles_with_audio``, target ≤ 1.0): the *on* host's
mosaic with ``audio=0`` against one ``ffmpeg`` doing the same xstack mosaic of the same files
and also encoding input 0's sound to AAC at 128 kbit/s (:func:`bench.ffmpeg_ref.xstack_args`
with ``audio=0``: FFmpeg decodes that one input's audio only), per round, median. While the
mosaic's output has no audio track the row compares the *on* mosaic and carries no verdict.

Rounds: off, on, on with sound, ffmpeg with sound, repeated (quick: one round, shorter
windows, one pass of the alarm clip).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from bench import mosaicrun
from bench.cases.mosaic_cost import PRESET, ffmpeg_sample, pattern, serve_clips
from bench.core import Context, Result, fmt, loadavg, median, not_run, percentile
from bench.media import (
    AlarmScript,
    alarm_clip,
    alarm_script,
    clips_with_sound,
    stream_starts,
    vod_playlist,
)
from bench.stack import StackHost, Watchers
from pipeline.errors import MessageError, TesseraError
from pipeline.messages.codec import decode_event
from pipeline.messages.events import AlarmCleared, AlarmRaised
from pipeline.monitoring.alarms import MIN_HOLD
from pipeline.monitoring.detect import DEBOUNCE
from pipeline.nats import eventlog
from pipeline.nats.topology import ALARMS
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.sources.synthetic import SourceServer
from pipeline.state.mosaic import source_key
from pipeline.state.stored import decode_entry

NAME = "monitoring"
TITLE = "10. Monitoring: alarm latency and CPU share"
TARGET_LATENCY_P95_S = 0.6
TARGET_SHARE_PCT = 10.0
TARGET_RATIO = 1.0
KINDS = ("black", "freeze", "silence")
HOLD = max(DEBOUNCE, MIN_HOLD)
"""The shortest hold a mosaic may ask for: the alarm is due this long after its onset."""
ALARM_SOURCES = 4
ALARM_SIZE = (640, 360)
"""The latency mosaic: 2x2 tiles of the clip's own 320x180, nothing scaled."""
ONSET_TOLERANCE = 0.25
"""An onset this close to a scripted start is that stretch's alarm."""
MIN_ONSETS = 20
TILES = 16
AUDIO_TILE = 0
BUSY = 0.9
"""As case 1: a sample whose stitcher made fewer of its pictures was taken on a busy machine."""
ROLES = ("grabber", "stitcher", "nats-server", "host")
MONITORING_OFF = {"TESSERA_MONITORING": "false"}
"""The baseline host: grabbers decode no audio, measure nothing and raise no alarms."""


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Result]:
    script = alarm_script()
    ctx.progress("making the clips with sound and the alarm clip (cached after the first run)")
    paths = clips_with_sound(ctx.cache_dir)
    alarm_ts = alarm_clip(ctx.cache_dir, script)
    # Case 1's settings: one encoder preset for Tessera and ffmpeg, a short idle timeout.
    env = {"TESSERA_IDLE_TIMEOUT": "2", "TESSERA_X264_PRESET": PRESET, "TESSERA_X264_CRF": "23"}
    results: list[Result] = []
    with SourceServer(workers=64) as server:
        names = serve_clips(server, paths, TILES)
        alarm_names = _serve_script(server, alarm_ts, script)
        async with (
            StackHost(ctx.work_dir, "monitoring-on", env) as on,
            StackHost(ctx.work_dir, "monitoring-off", {**env, **MONITORING_OFF}) as off,
            Watchers(on) as on_watchers,
            Watchers(off) as off_watchers,
        ):  # fmt: skip
            ctx.progress(f"alarm latency: {ALARM_SOURCES} scripted sources, holds of {HOLD:g} s")
            starts = stream_starts(alarm_ts)
            results += await _latency(
                ctx, on, on_watchers, server.port, alarm_names, script, starts
            )
            hosts = {"on": (on, on_watchers), "off": (off, off_watchers)}
            results += await _cpu(ctx, hosts, paths, pattern(server.port, names))
    return results


def _serve_script(server: SourceServer, clip: Path, script: AlarmScript) -> list[str]:
    """Serve the alarm clip as ``ALARM_SOURCES`` ended HLS playlists (distinct URLs: one
    grabber and one alarm per source each); their names."""
    data = clip.read_bytes()
    names = [f"alarm{i:02d}" for i in range(ALARM_SOURCES)]
    for name in names:
        server.add_file(f"{name}.ts", data, "video/mp2t")
        server.add_file(f"{name}.m3u8", vod_playlist(f"{name}.ts", script.seconds))
    return names


# -- alarm latency --------------------------------------------------------------------------------


@dataclass
class Sighting:
    """One alarm as the runner saw it."""

    source: str
    kind: str
    onset: float
    onset_wall: float
    raised_at: float
    """The event's ``at``: the grabber's clock when it made the event."""
    received: float
    """The runner's clock when the event arrived."""
    projected: float | None = None
    """The runner's clock when KV ``alarms`` first showed it (None: not seen)."""

    @property
    def latency(self) -> float:
        return self.received - (self.onset_wall + HOLD)


def _occurrence(source: str, kind: str, onset_wall: float) -> tuple[str, str, int]:
    # By wall time, not source time: a looping file (or an encoder restart) repeats its
    # source times, and each pass is an alarm of its own.
    return source, kind, round(onset_wall * 1000)


@dataclass
class AlarmLog:
    """Alarm events as they reach the runner (core NATS: every append, stored or not), and the
    projection's view of them."""

    raised: dict[tuple[str, str, int], Sighting] = field(default_factory=dict)
    projected: dict[tuple[str, str, int], float] = field(default_factory=dict)
    events: dict[str, set[bytes]] = field(default_factory=dict)
    """The distinct events received per source (a retried append arrives again)."""
    cleared: int = 0

    async def on_event(self, msg: Msg) -> None:
        received = time.time()
        try:
            event = decode_event(msg.data, msg.subject)
        except MessageError:
            return
        if not isinstance(event, AlarmRaised | AlarmCleared):
            return
        seen = self.events.setdefault(event.source, set())
        if msg.data in seen:
            return
        seen.add(msg.data)
        if isinstance(event, AlarmCleared):
            self.cleared += 1
            return
        key = _occurrence(event.source, event.kind, event.onset_wall)
        self.raised[key] = Sighting(event.source, event.kind, event.onset, event.onset_wall,
                                    event.at, received)  # fmt: skip

    def on_projection(self, source: str, value: bytes) -> None:
        seen = time.time()
        try:
            state = decode_entry(ALARMS.name, value).state
        except (TesseraError, ValueError):
            return
        for alarm in getattr(state, "active", ()):
            self.projected.setdefault(_occurrence(source, alarm.kind, alarm.onset_wall), seen)

    def sightings(self) -> list[Sighting]:
        for key, sighting in self.raised.items():
            sighting.projected = self.projected.get(key)
        return list(self.raised.values())


async def _watch_projection(host: StackHost, log: AlarmLog) -> None:
    assert host.nc is not None
    kv = await host.nc.jetstream().key_value(ALARMS.name)
    watcher: Any = await kv.watch(">")
    try:
        async for entry in watcher:
            if entry is not None and entry.value:
                log.on_projection(entry.key, entry.value)
    finally:
        await watcher.stop()


async def _latency(
    ctx: Context,
    host: StackHost,
    watchers: Watchers,
    port: int,
    names: list[str],
    script: AlarmScript,
    starts: dict[str, float],
) -> list[Result]:
    passes = ctx.pick(1, 2)
    assert host.nc is not None
    urls = [f"http://127.0.0.1:{port}/files/{name}.m3u8" for name in names]
    labels = {source_key(url): name for url, name in zip(urls, names, strict=True)}
    source = f"http://127.0.0.1:{port}/files/{{{','.join(names)}}}[n].m3u8"
    holds = ",".join(f"{kind}:{HOLD:g}" for kind in KINDS)
    log = AlarmLog()
    sub = await host.nc.subscribe("events.source.>", cb=log.on_event, pending_msgs_limit=10_000)
    projection = asyncio.create_task(_watch_projection(host, log), name="bench alarms watch")
    fps: list[str] = []
    try:
        fps, took = await mosaicrun.start(host, watchers, [(source, "alarms")], size=ALARM_SIZE,
                                          query={"alarms": holds})  # fmt: skip
        began = time.time()
        until = began + passes * script.seconds
        ctx.progress(f"mosaic running after {took:.1f} s; watching alarms for "
                     f"{passes * script.seconds:g} s ({passes} pass(es) of the clip)")  # fmt: skip
        # Then long enough for the last onsets' alarms to come.
        await asyncio.sleep(until + HOLD + 2.0 - time.time())
    finally:
        await sub.unsubscribe()
        await mosaicrun.stop(host, watchers, fps)
        await cancel_and_wait(projection)
    js = host.nc.jetstream()
    stored = {key: await eventlog.matching_count(js, f"events.source.{key}") for key in labels}
    counted = [s for s in log.sightings() if began <= s.onset_wall < until]
    return _latency_rows(counted, log, stored, script, starts, passes, labels)


def _latency_rows(
    counted: list[Sighting],
    log: AlarmLog,
    stored: dict[str, int],
    script: AlarmScript,
    starts: dict[str, float],
    passes: int,
    labels: dict[str, str],
) -> list[Result]:
    """Latency per kind; the onsets against the script (``starts``: the clip's first picture
    and sample, in source time)."""
    matched: dict[str, list[Sighting]] = {kind: [] for kind in KINDS}
    errors: dict[str, list[float]] = {kind: [] for kind in KINDS}
    false_alarms: list[str] = []
    for s in counted:
        start = starts.get("audio" if s.kind == "silence" else "video", 0.0)
        error = script.error(s.kind, s.onset - start) if s.kind in KINDS else None
        if error is None or abs(error) > ONSET_TOLERANCE:
            false_alarms.append(f"{s.kind} at {s.onset:.2f} s on {labels.get(s.source, s.source)}")
            continue
        matched[s.kind].append(s)
        errors[s.kind].append(round(error, 4))  # 0.1 ms: far below a frame or a window
    rows: list[Result] = []
    for kind in KINDS:
        found = matched[kind]
        expected = script.count(kind) * passes * ALARM_SOURCES
        name = f"alarm_latency_{kind}_p95"
        if not found:
            missing = f"no {kind} alarm arrived (expected ≈ {expected})"
            rows.append(Result(NAME, name, None, "s", target=TARGET_LATENCY_P95_S, ok=False,
                               note=missing))  # fmt: skip
            continue
        latencies = [s.latency for s in found]
        # A paced source's wall and source clocks advance together: an onset found late by
        # e seconds of source time is an alarm e seconds later than the stretch's true start.
        truth = [lat + e for lat, e in zip(latencies, errors[kind], strict=True)]
        detect = [s.raised_at - s.onset_wall - HOLD for s in found]
        deliver = [s.received - s.raised_at for s in found]
        projected = [s.projected - s.received for s in found if s.projected is not None]
        note = (
            f"{len(found)} onsets (≈ {expected} scripted); p50 {fmt(percentile(latencies, 50))}, "
            f"max {fmt(max(latencies))} s after onset + {HOLD:g} s hold; p50 split: detection "
            f"{fmt(median(detect))} s, append + delivery {fmt(median(deliver))} s; "
            f"from the scripted start instead of the detected onset: p95 "
            f"{fmt(percentile(truth, 95))} s; the projection (KV alarms) showed "
            f"{len(projected)} of them, {fmt(median(projected))} s after the event (p50)"
        )
        if kind == "silence":
            note += " (silence is read in 100 ms windows: its onset is a window's start)"
        if len(found) < MIN_ONSETS:
            note += f"; fewer than {MIN_ONSETS} onsets: less sure"
        rows.append(
            Result(
                NAME,
                name,
                percentile(latencies, 95),
                "s",
                target=TARGET_LATENCY_P95_S,
                note=note,
                details={
                    "latency_s": latencies,
                    "from_script_s": truth,
                    "detection_s": detect,
                    "delivery_s": deliver,
                    "projection_s": projected,
                    "expected": expected,
                    "label": f"alarm {kind}: onset + hold → event",
                },
            )  # fmt: skip
        )
    every = [abs(e) for kind in KINDS for e in errors[kind]]
    per_kind = "; ".join(
        f"{kind} median {fmt(median(errors[kind]))} s, max |{fmt(max(map(abs, errors[kind])))}| s"
        for kind in KINDS
        if errors[kind]
    )
    received = sum(len(events) for events in log.events.values())
    kept = sum(stored.values())
    note = (
        f"onset (source time) − scripted start of its stretch: {per_kind}; "
        f"{len(false_alarms)} false alarms"
        + (f" ({', '.join(false_alarms[:5])})" if false_alarms else "")
        + f"; EVENTS stored {kept} of the {received} distinct alarm events received"
    )
    if kept < received:
        note += (
            " (the others repeat an earlier pass's msg id, alarm-<source>-<kind>-<onset ms>: "
            "a looping file repeats its source times, and JetStream drops them as duplicates)"
        )
    rows.append(Result(NAME, "alarm_onset_error_p95", percentile(every, 95) if every else None,
                       "s", note=note,
                       details={"errors_s": errors, "false_alarms": false_alarms,
                                "stored": kept, "received": received,
                                "stream_starts_s": starts}))  # fmt: skip
    return rows


# -- CPU: monitoring on vs off, mosaic sound, ffmpeg --------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way of running the 16-tile mosaic: on which host, with which ``/create`` query."""

    name: str
    host: str
    query: dict[str, str]


OFF = Variant("off", "off", {"alarms": "off", "audio": "off"})
ON = Variant("on", "on", {"audio": "off"})
SOUND = Variant("on+audio", "on", {"audio": str(AUDIO_TILE)})


async def _cpu(
    ctx: Context,
    hosts: dict[str, tuple[StackHost, Watchers]],
    paths: list[Path],
    source: str,
) -> list[Result]:
    rounds = ctx.pick(1, 3)
    window = ctx.pick(4.0, 6.0)
    warmup = ctx.pick(1.5, 2.5)
    retries = ctx.pick(0, 1)
    samples: dict[str, list[mosaicrun.Sample]] = {v.name: [] for v in (OFF, ON, SOUND)}
    ffmpeg: list[dict[str, float]] = []
    track: bool | None = None
    """Whether the mosaic with ``audio=0`` carries an audio track (None: not known yet)."""
    for r in range(rounds):
        for variant in (OFF, ON, SOUND):
            if variant is SOUND and track is False:
                continue  # no mosaic sound yet: the same mosaic as "on"
            host, watchers = hosts[variant.host]
            sample, has_track = await _sample(host, watchers, source, variant, window, warmup)
            for _ in range(retries):
                if sample.realtime >= BUSY:
                    break
                ctx.progress(f"  the stitcher made {sample.realtime:.0%} of its pictures (load "
                             f"{loadavg()[0]:.1f}): measuring again")  # fmt: skip
                sample, has_track = await _sample(host, watchers, source, variant, window, warmup)
            if variant is SOUND:
                track = has_track
            samples[variant.name].append(sample)
            ctx.progress(
                f"round {r + 1}/{rounds} {variant.name:8s}: {sample.cpu:.3f} CPU-s/s ("
                + ", ".join(f"{k} {v:.3f}" for k, v in sample.roles.items())
                + f"; pictures made {sample.realtime:.0%})"
                + ("" if variant is not SOUND else f"; audio track: {'yes' if track else 'no'}")
            )
        ff = await ffmpeg_sample(ctx, paths, TILES, window, warmup, f"audio-r{r}", audio=AUDIO_TILE)
        ffmpeg.append(ff)
        ctx.progress(f"round {r + 1}/{rounds} ffmpeg+audio: {ff['cpu']:.3f} CPU-s/s "
                     f"(speed {ff['realtime']:.2f}×)")  # fmt: skip
    return [
        _share_row(samples["on"], samples["off"], window),
        _sound_row(samples["on+audio"], samples["on"], track),
        _ratio_row(samples["on+audio"] if track else samples["on"], ffmpeg, track),
    ]


async def _sample(
    host: StackHost,
    watchers: Watchers,
    source: str,
    variant: Variant,
    window: float,
    warmup: float,
) -> tuple[mosaicrun.Sample, bool | None]:
    """One window of the 16-tile mosaic of ``variant``, and whether its output has an audio
    track."""
    fps: list[str] = []
    try:
        fps, took = await mosaicrun.start(host, watchers, [(source, "")], query=variant.query)
        sample = await mosaicrun.sample(host, fps, window=window, warmup=warmup)
        sample.start_s = took
        return sample, await _audio_track(host, fps[0])
    finally:
        await mosaicrun.stop(host, watchers, fps)


_MAP = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


async def _audio_track(host: StackHost, fp: str) -> bool | None:
    """Whether the mosaic's CMAF init section declares an AAC track (None: no init section,
    not CMAF)."""
    found = _MAP.search(await host.playlist(fp))
    if found is None:
        return None
    init = await host.segment(fp, found.group(1))
    return None if init is None else b"mp4a" in init


def _share(on: mosaicrun.Sample, off: mosaicrun.Sample, role: str = "") -> float:
    """(on − off) / on's total, for every process or for ``role``'s."""
    if not on.cpu:
        return float("nan")
    if not role:
        return (on.cpu - off.cpu) / on.cpu
    return (on.roles.get(role, 0.0) - off.roles.get(role, 0.0)) / on.cpu


def _busy_note(samples: list[mosaicrun.Sample]) -> str:
    busy = [s.realtime for s in samples if s.realtime < BUSY]
    if not busy:
        return ""
    return (f"; machine too busy in {len(busy)} of {len(samples)} runs (stitcher made "
            f"{min(busy):.0%} of its pictures): less sure")  # fmt: skip


def _share_row(on: list[mosaicrun.Sample], off: list[mosaicrun.Sample], window: float) -> Result:
    pairs = list(zip(on, off, strict=False))
    shares = [_share(a, b) * 100 for a, b in pairs]
    by_role = {role: median([_share(a, b, role) * 100 for a, b in pairs]) for role in ROLES}
    on_cpu, off_cpu = median([s.cpu for s in on]), median([s.cpu for s in off])
    grabbers = median([a.roles.get("grabber", 0.0) - b.roles.get("grabber", 0.0) for a, b in pairs])
    loops = median(
        [a.main_threads.get("grabber", 0.0) - b.main_threads.get("grabber", 0.0) for a, b in pairs]
    )
    note = (
        f"on {fmt(on_cpu)} vs off {fmt(off_cpu)} CPU-s/s; the difference by process: "
        + ", ".join(f"{role} {fmt(by_role[role])} %" for role in ROLES)
        + f" of on; per source {fmt(grabbers * 1000 / TILES)} CPU-ms/s in its grabber: "
        f"{fmt((grabbers - loops) * 1000 / TILES)} in its threads (audio decode, s16, meter and "
        f"loudness, picture probes), {fmt(loops * 1000 / TILES)} in its event loop (levels and "
        "audio messages, alarm observations and events)"
    )
    return Result(
        NAME, "monitoring_cpu_share_16_tiles", median(shares), "%", target=TARGET_SHARE_PCT,
        note=note + _busy_note(on + off),
        details={"shares_pct": shares, "share_by_process_pct": by_role,
                 "on_cpu_per_s": [s.cpu for s in on], "off_cpu_per_s": [s.cpu for s in off],
                 "on_by_process": [s.roles for s in on], "off_by_process": [s.roles for s in off],
                 "on_main_threads": [s.main_threads for s in on],
                 "off_main_threads": [s.main_threads for s in off],
                 "on_realtime": [s.realtime for s in on], "off_realtime": [s.realtime for s in off],
                 "window_s": window, "tiles": TILES},
    )  # fmt: skip


def _sound_row(
    sound: list[mosaicrun.Sample], on: list[mosaicrun.Sample], track: bool | None
) -> Result:
    if not track:
        why = (
            "the mosaic's output has no audio track with audio=0: mosaic sound has not landed"
            if track is False
            else "the output is not CMAF: its tracks were not read"
        )
        return not_run(NAME, "mosaic_audio_cpu_share", "%", why)
    pairs = list(zip(sound, on, strict=False))
    shares = [_share(a, b) * 100 for a, b in pairs]
    stitcher = median([_share(a, b, "stitcher") * 100 for a, b in pairs])
    return Result(
        NAME, "mosaic_audio_cpu_share", median(shares), "%",
        note=f"audio=0 vs audio=off on the monitoring host: {fmt(median([s.cpu for s in sound]))}"
             f" vs {fmt(median([s.cpu for s in on]))} CPU-s/s; the stitcher {fmt(stitcher)} % "
             "(resample, AAC encode, mux)" + _busy_note(sound),
        details={"shares_pct": shares, "with_audio_cpu_per_s": [s.cpu for s in sound],
                 "with_audio_by_process": [s.roles for s in sound]},
    )  # fmt: skip


def _ratio_row(
    tessera: list[mosaicrun.Sample], ffmpeg: list[dict[str, float]], track: bool | None
) -> Result:
    ratios = [t.cpu / f["cpu"] for t, f in zip(tessera, ffmpeg, strict=False) if f["cpu"] > 0]
    t_cpu, f_cpu = median([t.cpu for t in tessera]), median([f["cpu"] for f in ffmpeg])
    note = (
        f"Tessera {fmt(t_cpu)} (monitoring on, audio={AUDIO_TILE}) vs ffmpeg {fmt(f_cpu)} "
        f"CPU-s/s (xstack + input {AUDIO_TILE}'s sound to AAC 128k); ffmpeg speed "
        f"{fmt(median([f['realtime'] for f in ffmpeg]))}×"
    )
    if not track:
        note = (
            "no verdict: the mosaic's output has no audio track (mosaic sound has not landed), "
            "so Tessera here is the monitoring mosaic without sound against ffmpeg with it; " + note
        )
    return Result(
        NAME, "cpu_ratio_16_tiles_with_audio", median(ratios), "× ffmpeg",
        target=TARGET_RATIO if track else None, note=note + _busy_note(tessera),
        details={"ratios": ratios, "tessera_cpu_per_s": [t.cpu for t in tessera],
                 "ffmpeg_cpu_per_s": [f["cpu"] for f in ffmpeg],
                 "ffmpeg_realtime": [f["realtime"] for f in ffmpeg],
                 "tessera_by_process": [t.roles for t in tessera], "audio_track": track},
    )  # fmt: skip
