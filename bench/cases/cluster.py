"""Case 15, beyond one machine: the cluster topology of ``tessera cluster`` on this box.

A 3-server JetStream cluster, the control plane and two agents ("machines", no shared memory:
frames cross NATS), a 9-tile mosaic of 320x180 live sources at 25 fps (so most tiles cross
from one machine to the other). Measured:

- CPU (CPU-s/s) and NATS bytes per machine over a window, with tiles sent raw and as JPEG
  (``TESSERA_FRAME_ENCODING``): bytes are each machine's workers' and agent's client
  connections as the three servers count them (``/connz`` in + out);
- failover: ``kill -9`` of the agent that runs the stitcher (its whole process group), time
  until the stitcher beats from the other agent, and until the playlist advances again, minus
  the heartbeat deadline (``TESSERA_INSTANCE_HEARTBEAT_TIMEOUT``); the killed agent is started
  again before the next round (target p95 ≤ 5 s after the deadline);
- ``kill -9`` of the NATS server leading ``EVENTS`` while facts are appended without pause:
  acknowledged events lost (target 0).

Two cores run all of it (3 nats-servers, 2 agents, 11 workers, the sources): the CPU figures
are this topology's, not a real cluster's.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import m3u8

from bench import cpu
from bench.core import Context, Result, percentile
from pipeline.cli.cluster import LocalCluster, Machine
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import InstanceHeartbeat
from pipeline.nats.cluster import AppendProbe
from pipeline.nats.connect import connect
from pipeline.nats.topology import EVENTS
from pipeline.sources.synthetic import LiveHlsSource, SourceServer

NAME = "cluster"
TITLE = "15. Beyond one machine (cluster, failover)"

DEADLINE = 3.0
"""The agents' heartbeat deadline here (s): failover is measured from it."""
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (30, 210, 220),
           (210, 40, 210), (240, 140, 20), (128, 128, 128), (235, 235, 235)]  # fmt: skip
ENV = {
    "TESSERA_HEARTBEAT_INTERVAL": "0.5",
    "TESSERA_POLL_INTERVAL": "0.5",
    # The instance pool's poll interval stays at its default (5 s): a pass comes at an agent's
    # heartbeat deadline anyway, which is what failover is measured from.
    "TESSERA_INSTANCE_HEARTBEAT_TIMEOUT": str(DEADLINE),
    "TESSERA_WORKER_HEARTBEAT_TIMEOUT": "4",
    "TESSERA_X264_PRESET": "ultrafast",
    "TESSERA_CAPACITY_GRABBER": "6",  # 9 tiles need both machines
    "TESSERA_CAPACITY_STITCHER": "2",
}


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Result]:
    names = [f"s{i}" for i in range(len(COLOURS))]
    made = [LiveHlsSource(c, width=320, height=180, fps=25) for c in COLOURS]
    sources = SourceServer(dict(zip(names, made, strict=True)))
    sources.start()
    pattern = f"http://127.0.0.1:{sources.port}/{{{','.join(names)}}}[n]/index.m3u8"
    results: list[Result] = []
    try:
        per_encoding: dict[str, dict[str, Any]] = {}
        for encoding in ("raw", "jpeg"):
            ctx.progress(f"tiles {encoding}: cluster up, 9-tile mosaic")
            per_encoding[encoding] = await _measure(ctx, pattern, encoding)
        results += _transport_rows(per_encoding)
        ctx.progress("failover rounds")
        results += await _failover(ctx, pattern)
    finally:
        sources.stop()
    return results


async def _cluster(root: Path, encoding: str = "jpeg") -> LocalCluster:
    cluster = LocalCluster(root, env={**ENV, "TESSERA_FRAME_ENCODING": encoding})
    await cluster.start()
    return cluster


async def _create(http: httpx.AsyncClient, pattern: str) -> str:
    got = await http.get("/create", params={"urls": pattern, "size": "960x540", "fps": "25"})
    if got.status_code != 302:
        raise RuntimeError(f"/create answered {got.status_code}: {got.text[:200]}")
    return str(got.headers["location"])


async def _sequence(http: httpx.AsyncClient, playlist: str) -> int:
    try:
        got = await http.get(playlist)
    except httpx.HTTPError:
        return -1
    if got.status_code != 200:
        return -1
    parsed = m3u8.loads(got.text)
    return int(parsed.media_sequence or 0) + len([s for s in parsed.segments if s.uri])


async def _advancing(http: httpx.AsyncClient, playlist: str, within: float) -> float:
    """Seconds until the playlist gains a segment (bounded by ``within``)."""
    start = time.monotonic()
    first = await _sequence(http, playlist)
    while time.monotonic() - start < within:
        await asyncio.sleep(0.1)
        now = await _sequence(http, playlist)
        if first >= 0 and now > first:
            return time.monotonic() - start
        first = first if first >= 0 else now
    raise RuntimeError(f"the playlist did not advance within {within:g} s")


async def _workers(cluster: LocalCluster) -> dict[str, tuple[str, ...]]:
    nc = await connect(cluster.nats.url_for("admin"), name="bench-cluster")
    try:
        js = nc.jetstream()
        out: dict[str, tuple[str, ...]] = {}
        for agent in cluster.agents:
            subject = f"hb.instance.{agent.name}"
            with contextlib.suppress(Exception):
                msg = await js.get_last_msg("HEARTBEATS", subject)
                beat = decode_heartbeat(msg.data or b"", subject)
                if isinstance(beat, InstanceHeartbeat):
                    out[agent.name] = beat.workers
        return out
    finally:
        await nc.close()


async def _connz(http: httpx.AsyncClient, cluster: LocalCluster) -> dict[str, int]:
    """Bytes (in + out) of every named client connection, over the three servers."""
    total: dict[str, int] = {}
    for base in cluster.nats.monitor_urls:
        with contextlib.suppress(httpx.HTTPError):
            got = (await http.get(f"{base}/connz", params={"limit": 1024})).json()
            for conn in got.get("connections", []):
                name = conn.get("name") or ""
                total[name] = total.get(name, 0) + conn["in_bytes"] + conn["out_bytes"]
    return total


def _machine_cpu(machine: Machine) -> float:
    pid = machine.pid
    if pid is None:
        return 0.0
    return sum(cpu.cpu_seconds(p) or 0.0 for p in [pid, *cpu.descendants(pid)])


async def _measure(ctx: Context, pattern: str, encoding: str) -> dict[str, Any]:
    window = ctx.pick(5.0, 15.0)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = await _cluster(Path(tmp), encoding)
        try:
            async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
                playlist = await _create(http, pattern)
                await _advancing(http, playlist, 90)
                await asyncio.sleep(ctx.pick(3.0, 8.0))  # every tile settles
                placed = await _workers(cluster)
                cpu0 = {m.name: _machine_cpu(m) for m in cluster.machines}
                bytes0 = await _connz(http, cluster)
                t0 = time.monotonic()
                await asyncio.sleep(window)
                elapsed = time.monotonic() - t0
                cpu1 = {m.name: _machine_cpu(m) for m in cluster.machines}
                bytes1 = await _connz(http, cluster)
        finally:
            await cluster.stop()
    machines: dict[str, dict[str, Any]] = {}
    for name in cpu0:
        conns = {f"agent-{name}", *placed.get(name, ())}
        sent = sum(bytes1.get(c, 0) - bytes0.get(c, 0) for c in conns)
        machines[name] = {
            "cpu": (cpu1[name] - cpu0[name]) / elapsed,
            "mbit_s": sent * 8 / elapsed / 1e6,
            "workers": sorted(placed.get(name, ())),
        }
    return {"window_s": round(elapsed, 1), "machines": machines}


def _transport_rows(per: dict[str, dict[str, Any]]) -> list[Result]:
    rows: list[Result] = []
    for encoding, figures in per.items():
        agents = {n: m for n, m in figures["machines"].items() if n != "control"}
        rows.append(
            Result(
                NAME,
                f"agents_cpu_9_tiles_{encoding}",
                round(sum(m["cpu"] for m in agents.values()), 3),
                "CPU-s/s",
                note=f"both agent machines (workers included), tiles sent {encoding}",
                details=figures,
            )
        )
        rows.append(
            Result(
                NAME,
                f"agents_nats_mbit_s_9_tiles_{encoding}",
                round(sum(m["mbit_s"] for m in agents.values()), 1),
                "Mbit/s",
                note="client bytes in + out of the agents' workers, as the servers count them",
            )
        )
    raw = sum(m["mbit_s"] for n, m in per["raw"]["machines"].items() if n != "control")
    jpeg = sum(m["mbit_s"] for n, m in per["jpeg"]["machines"].items() if n != "control")
    rows.append(
        Result(
            NAME,
            "nats_bytes_jpeg_vs_raw",
            round(jpeg / raw, 3) if raw else None,
            "x",
            note="cross-machine tiles as JPEG against raw, same mosaic",
        )
    )
    return rows


async def _failover(ctx: Context, pattern: str) -> list[Result]:
    rounds = ctx.pick(2, 5)
    moved: list[float] = []
    playing: list[float] = []
    lost: int | None = None
    acked = 0
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = await _cluster(Path(tmp))
        try:
            async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
                playlist = await _create(http, pattern)
                await _advancing(http, playlist, 90)
                for i in range(rounds):
                    placed = await _workers(cluster)
                    host = next(n for n, ws in placed.items() if any(
                        w.startswith("stitcher-") for w in ws))  # fmt: skip
                    victim = cluster.agent(host)
                    other = next(a for a in cluster.agents if a is not victim)
                    killed = time.monotonic()
                    victim.kill()
                    while True:
                        if time.monotonic() - killed > 60:
                            raise RuntimeError("the stitcher did not move within 60 s")
                        ws = (await _workers(cluster)).get(other.name, ())
                        if any(w.startswith("stitcher-") for w in ws):
                            break
                        await asyncio.sleep(0.1)
                    moved.append(time.monotonic() - killed - DEADLINE)
                    await _advancing(http, playlist, 60)
                    playing.append(time.monotonic() - killed - DEADLINE)
                    ctx.progress(f"round {i + 1}: moved {moved[-1]:+.2f} s, playing "
                                 f"{playing[-1]:+.2f} s after the deadline")  # fmt: skip
                    await victim.stop(5.0)
                    await victim.start(60.0)  # the machine comes back, empty
                    await asyncio.sleep(DEADLINE)
                ctx.progress("kill -9 of the EVENTS leader while appending")
                acked, lost = await _kill_nats_leader(cluster)
        finally:
            await cluster.stop()
    return [
        Result(NAME, "failover_moved_p50_after_deadline", round(percentile(moved, 50), 2), "s",
               details={"samples": moved}, note="stitcher beating on the other machine"),
        Result(NAME, "failover_moved_p95_after_deadline", round(percentile(moved, 95), 2), "s",
               target=5.0, details={"samples": moved}),
        Result(NAME, "failover_playing_p95_after_deadline", round(percentile(playing, 95), 2),
               "s", target=5.0, details={"samples": playing},
               note="the mosaic's playlist advances again"),
        Result(NAME, "lost_acknowledged_events", lost, "events", target=0,
               note=f"{acked} appended while the EVENTS leader's server was killed"),
    ]  # fmt: skip


async def _kill_nats_leader(cluster: LocalCluster) -> tuple[int, int]:
    nc = await connect(cluster.nats.url_for("admin"), name="bench-cluster", forever=True)
    try:
        js = nc.jetstream()
        async with AppendProbe(js) as probe:
            await asyncio.sleep(1.0)
            info = (await js.stream_info(EVENTS.name)).cluster
            leader = info.leader if info is not None and info.leader else "nats-1"
            cluster.nats.kill(int(leader.rsplit("-", 1)[1]) - 1)
            await asyncio.sleep(15.0)
        return len(probe.acked), len(await probe.lost())
    finally:
        await nc.close()
