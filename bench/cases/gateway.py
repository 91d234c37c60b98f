"""Case 5, gateway: requests per second and latency of ``/play`` at 64 concurrent connections,
from ``wrk`` (a separate load process; Debian's, installed by ``just bench``), against the
gateway of a stack running one small live mosaic (one 320x180 source in 640x360: its workers
take little CPU from the gateway; in production they run on other instances). Target: ≥ 5,000
playlist requests/s with p99 ≤ 20 ms on 2 cores.

Runs alternate playlist and segment (the newest segment, served from the gateway's segment
cache after the first request), ``rounds`` times; figures are medians. The gateway's process
CPU and nats-server's are measured over each run; when the playlist target is missed a
``py-spy`` profile of the gateway under the same load says where its time goes.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx

from bench import profile
from bench.core import CaseSkipped, Context, Result, fmt, median
from bench.cpu import CpuWindow
from bench.media import require
from bench.play import PlaylistPoller
from bench.stack import StackHost, Watchers, until
from pipeline.runtime.procs import die_with_parent
from pipeline.sources.synthetic import LiveHlsSource, SourceServer

NAME = "gateway"
TITLE = "5. Gateway under load (wrk, 64 connections)"
CONNECTIONS = 64
TARGET_RPS = 5000.0
TARGET_P99_MS = 20.0
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and errors from ``wrk --latency`` output."""
    out: dict[str, Any] = {"percentiles_ms": {}}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(line.split()[1])
        elif m := re.match(r"^(50|75|90|99)%\s+([\d.]+)(us|ms|s)$", line):
            out["percentiles_ms"][int(m[1])] = float(m[2]) * _UNITS[m[3]]
        elif line.startswith("Non-2xx or 3xx responses:"):
            out["non_2xx"] = int(line.split(":")[1])
        elif line.startswith("Socket errors:"):
            out["socket_errors"] = line.split(":", 1)[1].strip()
        elif m := re.match(r"^(\d+) requests in", line):
            out["requests"] = int(m[1])
    if "rps" not in out:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{text[-500:]}")
    return out


async def wrk(url: str, seconds: float) -> dict[str, Any]:
    """One wrk run (2 threads, 64 connections)."""
    proc = await asyncio.create_subprocess_exec(
        require("wrk"), "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "5s", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return parse_wrk(out.decode(errors="replace"))


WATCHED = ("Mosaics._playlist", "JetStreamContext.key_value", "KeyValue.get",
           "PrometheusMiddleware.__call__")  # fmt: skip
"""Functions whose inclusive share of the gateway's busy time the note names."""


def _inside(prof: dict[str, object]) -> str:
    inclusive = prof.get("inclusive")
    if not isinstance(inclusive, dict):
        return ""
    shares = [f"{name.split(' (')[0]} {share:.0%}" for name, share in inclusive.items()
              if name.split(" (")[0] in WATCHED]  # fmt: skip
    return f" (inclusive: {', '.join(shares)})" if shares else ""


async def keepalive_probe(url: str, count: int = 10) -> dict[str, float]:
    """Median milliseconds of one request at a time on a reused connection, and on a new one.

    A server whose accepted sockets lack ``TCP_NODELAY`` answers a reused connection ~40 ms
    late (Nagle's algorithm holds the body behind the headers until the client's delayed ACK).
    """
    reused, fresh = [], []
    async with httpx.AsyncClient() as client:
        await client.get(url)
        for _ in range(count):
            began = time.perf_counter()
            await client.get(url)
            reused.append((time.perf_counter() - began) * 1000)
    for _ in range(count):
        async with httpx.AsyncClient() as client:
            began = time.perf_counter()
            await client.get(url)
            fresh.append((time.perf_counter() - began) * 1000)
    return {"reused_ms": median(reused), "new_connection_ms": median(fresh)}


async def _run(ctx: Context) -> list[Result]:
    require("wrk")
    rounds = ctx.pick(1, 3)
    seconds = ctx.pick(4.0, 8.0)
    sources = {"cam0": LiveHlsSource((220, 30, 30), width=320, height=180)}
    runs: dict[str, list[dict[str, Any]]] = {"playlist": [], "segment": []}
    prof: dict[str, object] = {"error": "not needed: the target was met"}
    with SourceServer(sources) as server:
        pattern = f"http://127.0.0.1:{server.port}/{{cam0}}[n]/index.m3u8"
        async with StackHost(ctx.work_dir, "gateway", {}) as host, Watchers(host) as watchers:
            fp = await host.create(pattern, size="640x360")
            watchers.fps.add(fp)
            await until(lambda: host.beats.stitcher_ready(fp), 60, "the mosaic to run")
            poller = PlaylistPoller(host, fp)
            listed = await poller.poll()
            for _ in range(30):  # a CMAF stitcher is ready at its first part, not segment
                if listed:
                    break
                await asyncio.sleep(0.1)
                listed = await poller.poll()
            if not listed:
                raise CaseSkipped("the mosaic's playlist lists no segment")
            segment = listed[-1].uri
            body = await host.segment(fp, segment)
            assert body, "the newest segment cannot be fetched"
            segment_bytes = len(body)
            urls = {
                "playlist": f"{host.gateway}/play/{fp}/index.m3u8",
                "segment": f"{host.gateway}/play/{fp}/{segment}",
            }
            probe = await keepalive_probe(urls["playlist"])
            ctx.progress(
                f"one request at a time: {probe['reused_ms']:.1f} ms on a reused connection, "
                f"{probe['new_connection_ms']:.1f} ms on a new one"
            )
            for r in range(rounds):
                for kind, url in urls.items():
                    procs = await host.processes()
                    cpu = CpuWindow(procs).begin()
                    got = await wrk(url, seconds)
                    cpu.end()
                    roles = {k: v / cpu.seconds for k, v in cpu.by_role().items()}
                    got["cpu_per_s"] = roles
                    runs[kind].append(got)
                    ctx.progress(
                        f"round {r + 1}/{rounds} {kind}: {got['rps']:,.0f} req/s, p50 "
                        f"{fmt(got['percentiles_ms'].get(50))} ms, p99 "
                        f"{fmt(got['percentiles_ms'].get(99))} ms; gateway "
                        f"{roles.get('host', 0):.2f} cores, nats-server "
                        f"{roles.get('nats-server', 0):.2f}"
                    )
            rps = median([g["rps"] for g in runs["playlist"]])
            p99 = median([g["percentiles_ms"].get(99, float("nan")) for g in runs["playlist"]])
            missed = rps < TARGET_RPS or p99 > TARGET_P99_MS
            if missed and ctx.quick:
                prof = {"error": "profiled in the full run"}
            elif missed and profile.available():
                ctx.progress("profiling the gateway under the playlist load (py-spy)")
                load = asyncio.create_task(wrk(urls["playlist"], seconds + 2))
                try:
                    await asyncio.sleep(1.0)
                    prof = await profile.sample(host.pid, seconds, ctx.work_dir / "gw.pyspy")
                finally:
                    await load
            elif missed:
                prof = {"error": "py-spy not installed (pip install py-spy)"}
    results = []
    for kind in ("playlist", "segment"):
        done = runs[kind]
        rps = median([g["rps"] for g in done])
        pct = {q: median([g["percentiles_ms"].get(q, float("nan")) for g in done])
               for q in (50, 75, 90, 99)}  # fmt: skip
        gw = median([g["cpu_per_s"].get("host", 0.0) for g in done])
        nats = median([g["cpu_per_s"].get("nats-server", 0.0) for g in done])
        errors = sum(g.get("non_2xx", 0) for g in done)
        note = (
            f"p50 {fmt(pct[50])} ms, p99 {fmt(pct[99])} ms; gateway {gw:.2f} cores, "
            f"nats-server {nats:.2f}"
        )
        if errors:
            note += f"; {errors} non-2xx answers"
        if kind == "playlist":
            if probe["reused_ms"] > 30 and probe["reused_ms"] > 4 * probe["new_connection_ms"]:
                note += (
                    f"; one request on a reused connection takes {probe['reused_ms']:.0f} ms "
                    f"vs {probe['new_connection_ms']:.1f} ms on a new one: responses wait for "
                    "a delayed ACK (accepted sockets without TCP_NODELAY)"
                )
            if "error" not in prof or not str(prof["error"]).startswith("not needed"):
                note += f"; gateway busy in: {profile.summary(prof)}{_inside(prof)}"
        else:
            note += f"; {segment_bytes:,} B segments from the gateway's cache"
        details: dict[str, Any] = {
            "runs": done,
            "percentiles_ms": pct,
            "seconds": seconds,
            "rounds": rounds,
            "connections": CONNECTIONS,
        }
        if kind == "playlist":
            details["profile"] = prof
            details["one_at_a_time"] = probe
        results.append(
            Result(
                NAME,
                f"{kind}_requests_per_s",
                rps,
                "req/s",
                target=TARGET_RPS if kind == "playlist" else None,
                op=">=",
                note=note,
                details=details,
            )  # fmt: skip
        )
        if kind == "playlist":
            results.append(
                Result(NAME, "playlist_p99", pct[99], "ms", target=TARGET_P99_MS, op="<=",
                       note=f"p50 {fmt(pct[50])}, p75 {fmt(pct[75])}, p90 {fmt(pct[90])} ms",
                       details={"latency_points_ms": pct, "target_ms": TARGET_P99_MS,
                                "label": "playlist latency (wrk, 64 conn.)"})
            )  # fmt: skip
    return results
