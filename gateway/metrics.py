"""``/metrics`` in the Prometheus text format.

One registry per app: HTTP metrics by route (:mod:`gateway.httpmetrics`) and pipeline metrics
built at scrape time from the newest heartbeat of every
worker, agent and service (:class:`~pipeline.nats.beats.HeartbeatCache`) and from JetStream
(stream sizes, the projector's pending events, the events it parked).

Alarms come from the projected source states the gateway follows (KV ``alarms``,
:class:`~gateway.alarms.AlarmBook`), one series per source that has a state and kind, so the
label sets grow only with the sources that ever raised a condition:
``tessera_alarm_active{source, kind}`` (1 while the source's condition of that kind is raised,
whatever any mosaic's hold; 0 otherwise) and ``tessera_alarms_raised_total{source, kind}``
(the projected count of raises per kind, which never goes down).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from gateway.alarms import Alarms
from gateway.context import GatewayContext
from gateway.guard import Guard
from gateway.livestate import LiveState
from pipeline.control.projector import DURABLE
from pipeline.messages.heartbeats import (
    GrabberStats,
    InstanceHeartbeat,
    JitStats,
    StitcherStats,
    WorkerHeartbeat,
)
from pipeline.monitoring.alarms import AlarmKind
from pipeline.nats.beats import HeartbeatCache
from pipeline.nats.topology import BUCKETS, EVENTS, PARKED, STREAMS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PipelineCollector(Collector):
    """Pipeline gauges and counters from the heartbeat cache and a JetStream snapshot."""

    def __init__(
        self, beats: HeartbeatCache, live: LiveState | None = None, alarms: Alarms | None = None
    ) -> None:
        self.beats = beats
        self.live = live
        self.alarms = alarms
        self.streams: dict[str, tuple[int, int]] = {}
        self.pending: int | None = None

    def collect(self) -> Iterator[Metric]:  # noqa: C901 - one flat list of families
        g = GaugeMetricFamily
        c = CounterMetricFamily
        src_in = g("tessera_source_fps_in", "Frames/s decoded from a source", labels=["source"])
        src_out = g("tessera_source_fps_out", "Frames/s published for a source", labels=["source"])
        src_up = g("tessera_source_connected", "1 while a source is connected", labels=["source"])
        src_rec = c("tessera_source_reconnects", "Reconnects of a source", labels=["source"])
        src_err = c("tessera_source_decode_errors", "Decode errors of a source", labels=["source"])
        src_var = g("tessera_source_rendition_info",
                    "1 for the HLS variant a source's grabber chose for its tile",
                    labels=["source", "rendition"])  # fmt: skip
        src_size = g("tessera_source_tile_size_info",
                     "1 for each tile size a source's grabber makes (one decode for all)",
                     labels=["source", "size"])  # fmt: skip
        mos_fps = g("tessera_mosaic_stitch_fps", "Frames/s a mosaic composes", labels=["mosaic"])
        mos_late = c("tessera_mosaic_late_frames", "Mosaic ticks skipped late", labels=["mosaic"])
        mos_enc = g("tessera_mosaic_encode_ms", "Compose+encode ms per frame", labels=["mosaic"])
        mos_seg = c("tessera_mosaic_segments", "Segments stored", labels=["mosaic"])
        mos_bytes = g("tessera_mosaic_segment_bytes", "Size of the last segment", labels=["mosaic"])
        mos_dead = g("tessera_mosaic_dead_tiles", "Tiles showing a dead source", labels=["mosaic"])
        mos_parts = c("tessera_mosaic_parts", "LL-HLS parts stored", labels=["mosaic"])
        mos_rtc = g("tessera_mosaic_webrtc_viewers", "WHEP viewers of a mosaic", labels=["mosaic"])
        mos_drop = c("tessera_mosaic_webrtc_dropped_frames",
                     "Frames dropped for WHEP viewers behind", labels=["mosaic"])  # fmt: skip
        ses_fps = g("tessera_session_fps", "Frames/s sent by a session", labels=["session"])
        ses_view = g("tessera_session_viewers", "Viewers of a session", labels=["session"])
        ses_seek = c("tessera_session_seeks", "Seeks in a session", labels=["session"])
        inst_cap = g("tessera_instance_capacity", "Capacity", labels=["instance", "kind"])
        inst_used = g("tessera_instance_used", "Capacity used", labels=["instance", "kind"])
        age = g("tessera_heartbeat_age_seconds", "Age of the last heartbeat", labels=["subject"])
        now = time.time()
        for subject, (beat, _) in sorted(self.beats.latest.items()):
            age.add_metric([subject], max(0.0, now - beat.at))
            if isinstance(beat, WorkerHeartbeat):
                t, stats = beat.target, beat.stats
                if isinstance(stats, GrabberStats):
                    src_in.add_metric([t], stats.fps_in)
                    src_out.add_metric([t], stats.fps_out)
                    src_up.add_metric([t], 1.0 if stats.connected else 0.0)
                    src_rec.add_metric([t], stats.reconnects)
                    src_err.add_metric([t], stats.decode_errors)
                    if stats.rendition:
                        src_var.add_metric([t, stats.rendition], 1.0)
                    for tile in stats.sizes:
                        src_size.add_metric([t, tile], 1.0)
                elif isinstance(stats, StitcherStats):
                    mos_fps.add_metric([t], stats.fps)
                    mos_late.add_metric([t], stats.late_frames)
                    mos_enc.add_metric([t], stats.encode_ms)
                    mos_seg.add_metric([t], stats.segments)
                    mos_bytes.add_metric([t], stats.segment_bytes)
                    mos_dead.add_metric([t], stats.dead_tiles)
                    mos_parts.add_metric([t], stats.parts)
                    mos_rtc.add_metric([t], stats.webrtc_viewers)
                    mos_drop.add_metric([t], stats.webrtc_dropped)
                elif isinstance(stats, JitStats):
                    ses_fps.add_metric([t], stats.fps)
                    ses_view.add_metric([t], stats.viewers)
                    ses_seek.add_metric([t], stats.seeks)
            elif isinstance(beat, InstanceHeartbeat):
                for kind, n in beat.capacity.items():
                    inst_cap.add_metric([beat.instance_id, kind], n)
                for kind, n in beat.used.items():
                    inst_used.add_metric([beat.instance_id, kind], n)
        msgs = g("tessera_stream_messages", "Messages in a JetStream stream", labels=["stream"])
        size = g("tessera_stream_bytes", "Bytes in a JetStream stream", labels=["stream"])
        for name, (n, b) in sorted(self.streams.items()):
            msgs.add_metric([name], n)
            size.add_metric([name], b)
        yield from (src_in, src_out, src_up, src_rec, src_err, src_var, src_size)
        yield from (mos_fps, mos_late, mos_enc)
        yield from (mos_seg, mos_bytes, mos_dead, mos_parts, mos_rtc, mos_drop)
        yield from (ses_fps, ses_view, ses_seek, inst_cap)
        yield from (inst_used, age, msgs, size)
        if PARKED.name in self.streams:
            # From the stream, not a heartbeat: it survives restarts, and an operator who
            # deals with a parked event (removes it) brings it down.
            parked = g("tessera_events_parked", "Events the projector parked (stream PARKED)")
            parked.add_metric([], self.streams[PARKED.name][0])
            yield parked
        if self.live is not None:
            held = g("tessera_gateway_held_requests",
                     "LL-HLS requests this gateway holds until their part exists")  # fmt: skip
            held.add_metric([], self.live.held)
            yield held
        if self.pending is not None:
            lag = g("tessera_projector_pending", "Events the projector has not folded yet")
            lag.add_metric([], self.pending)
            yield lag
        if self.alarms is not None:
            yield from self._alarms(self.alarms)

    @staticmethod
    def _alarms(alarms: Alarms) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "tessera_alarm_active",
            "1 while a source's condition of this kind is raised (before any mosaic's hold)",
            labels=["source", "kind"],
        )
        raised = CounterMetricFamily(
            "tessera_alarms_raised", "Conditions raised on a source", labels=["source", "kind"]
        )
        kinds = [kind.value for kind in AlarmKind]
        for key, state in sorted(alarms.book.sources.items()):
            now = {a.kind for a in state.active}
            # A kind a newer grabber raises is shown too: the state holds it.
            for kind in kinds + sorted(now - set(kinds)):
                active.add_metric([key, kind], 1.0 if kind in now else 0.0)
            for kind, count in sorted(state.raised_by_kind.items()):
                raised.add_metric([key, kind], count)
        streams = GaugeMetricFamily(
            "tessera_gateway_alarm_streams", "Alarm event streams open on this gateway"
        )
        streams.add_metric([], alarms.streams)
        yield from (active, raised, streams)


class Metrics:
    """The /metrics route over one gateway's heartbeat cache."""

    def __init__(
        self,
        ctx: GatewayContext,
        beats: HeartbeatCache,
        live: LiveState | None = None,
        guard: Guard | None = None,
        alarms: Alarms | None = None,
    ) -> None:
        self.ctx = ctx
        self.guard = guard
        self.collector = PipelineCollector(beats, live, alarms)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    async def _refresh(self) -> None:
        streams: dict[str, tuple[int, int]] = {}
        for name in [s.name for s in STREAMS] + [b.stream_name for b in BUCKETS]:
            try:
                info = await self.ctx.js.stream_info(name)
            except NotFoundError:
                continue
            streams[name] = (int(info.state.messages), int(info.state.bytes))
        self.collector.streams = streams
        try:
            consumer = await self.ctx.js.consumer_info(EVENTS.name, DURABLE)
            self.collector.pending = int(consumer.num_pending or 0)
        except NotFoundError:
            self.collector.pending = None

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``: open, but for the admin scope while play URLs are signed (its
        series are labelled with mosaic fingerprints, which a signed deployment keeps to
        itself; Prometheus sends the token as ``authorization: {credentials: ...}``)."""
        if self.guard is not None and self.ctx.config.play_secret:
            if refused := self.guard.authorize(request, "admin"):
                return refused
        await self._refresh()
        body = generate_latest(self.registry)
        return Response(body, media_type=CONTENT_TYPE)
