"""Case 5, gateway: requests per second and latency of ``/play`` at 64 concurrent connections,
from ``wrk`` (a separate load process; Debian's, installed by ``just bench``), against the
gateway of a stack running one small live mosaic (one 320x180 source in 640x360: its workers
take little CPU from the gateway; in production they run on other instances). Target: ≥ 5,000
playlist requests/s with p99 ≤ 20 ms on 2 cores.

Runs alternate playlist and segment (the newest segment when the run starts, served from the
gateway's cache after the first request; one picked once would leave the playlist's window, and
404, within seconds), ``rounds`` times; figures are medians. The gateway's process
CPU and nats-server's are measured over each run; when the playlist target is missed a
``py-spy`` profile of the gateway under the same load says where its time goes.

Signed play URLs (issue 21): a second stack host, with its own data dir, signs them
(``TESSERA_PLAY_SECRET``; ``/create`` with its ``TESSERA_API_TOKEN``) and runs the same mosaic.
Each round runs wrk on the first stack's playlist, then on the second's signed playlist
(``/s/<token>/play/<fp>/index.m3u8``), then on the segment: A, B, A, B in the same rounds.
``signed_playlist_ratio`` is the median of each round's signed ÷ unsigned req/s (target ≥ 0.9).
Both stacks run for the whole case, so the two sides of each pair share the machine's state:
while one is loaded, the other's mosaic (one small stitcher and grabber) runs beside it, which
every figure of the case therefore includes (the runs note its CPU). A signed run with answers
other than 2xx (a refused URL: 403) makes the ratio a ✗ that says so; so does a second stack
that does not refuse an unsigned request (signing off: there would be nothing to compare).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from typing import Any

import httpx
import m3u8

from bench import profile
from bench.core import CaseSkipped, Context, Result, fmt, median
from bench.cpu import CpuWindow
from bench.media import require
from bench.play import PlaylistPoller
from bench.stack import StackError, StackHost, Watchers, until
from pipeline.runtime.procs import die_with_parent
from pipeline.sources.synthetic import LiveHlsSource, SourceServer

NAME = "gateway"
TITLE = "5. Gateway under load (wrk, 64 connections)"
CONNECTIONS = 64
TARGET_RPS = 5000.0
TARGET_P99_MS = 20.0
TARGET_SIGNED_RATIO = 0.9
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


def signed_env() -> dict[str, str]:
    """The settings of the stack that signs play URLs: a secret and an API token made for this
    run (``/create`` needs a ``mosaics`` token while URLs are signed; this one has every
    scope)."""
    return {
        "TESSERA_PLAY_SECRET": secrets.token_urlsafe(32),
        "TESSERA_API_TOKEN": secrets.token_urlsafe(24),
    }


async def newest_segment(host: StackHost, fp: str) -> str | None:
    """The newest segment ``fp``'s playlist lists once its stitcher runs (None: none listed)."""
    await until(lambda: host.beats.stitcher_ready(fp), 60, "the mosaic to run")
    poller = PlaylistPoller(host, fp)
    listed = await poller.poll()
    for _ in range(30):  # a CMAF stitcher is ready at its first part, not segment
        if listed:
            break
        await asyncio.sleep(0.1)
        listed = await poller.poll()
    return listed[-1].uri if listed else None


async def latest_segment(host: StackHost, fp: str) -> tuple[str, bytes]:
    """The newest complete segment ``fp``'s playlist lists, and its bytes (fetched once)."""
    listed = [str(s.uri) for s in m3u8.loads(await host.playlist(fp)).segments if s.uri]
    assert listed, "the mosaic's playlist lists no segment"
    body = await host.segment(fp, listed[-1])
    assert body, "the newest segment cannot be fetched"
    return listed[-1], body


async def check_signed(host: StackHost, fp: str) -> str:
    """The signed playlist URL of ``fp``, once it answers 200 and the unsigned one 403;
    StackError saying which does not."""
    assert host.http is not None
    if fp not in host.prefixes:
        raise StackError("/create answered an unsigned URL: TESSERA_PLAY_SECRET had no effect")
    got = await host.http.get(f"{host.play_path(fp)}/index.m3u8")
    if got.status_code != 200 or not got.text.startswith("#EXTM3U"):
        raise StackError(f"its signed playlist URL answered {got.status_code}: {got.text[:200]}")
    plain = await host.http.get(f"/play/{fp}/index.m3u8")
    if plain.status_code != 403:
        raise StackError(
            f"an unsigned request for its playlist answered {plain.status_code}, not 403: "
            "its URLs are not signed, there is nothing to compare"
        )
    return f"{host.gateway}{host.play_path(fp)}/index.m3u8"


async def _run(ctx: Context) -> list[Result]:
    require("wrk")
    rounds = ctx.pick(1, 3)
    seconds = ctx.pick(4.0, 8.0)
    sources = {"cam0": LiveHlsSource((220, 30, 30), width=320, height=180)}
    runs: dict[str, list[dict[str, Any]]] = {"playlist": [], "signed_playlist": [], "segment": []}
    prof: dict[str, object] = {"error": "not needed: the target was met"}
    signed_error = ""
    signed_probe: dict[str, float] = {}
    sizes: dict[str, int] = {}
    with SourceServer(sources) as server:
        pattern = f"http://127.0.0.1:{server.port}/{{cam0}}[n]/index.m3u8"
        async with contextlib.AsyncExitStack() as stack:
            # Both stacks run for the whole case: see the module's docstring.
            host = await stack.enter_async_context(StackHost(ctx.work_dir, "gateway", {}))
            watchers = await stack.enter_async_context(Watchers(host))
            signer: StackHost | None = None
            try:
                signer = await stack.enter_async_context(
                    StackHost(ctx.work_dir, "gateway-signed", signed_env())
                )
            except StackError as exc:
                signed_error = f"the signing stack did not start: {exc}"
            fp = await host.create(pattern, size="640x360")
            watchers.fps.add(fp)
            signed_fp = ""
            if signer is not None:
                try:
                    signed_fp = await signer.create(pattern, size="640x360")
                except StackError as exc:
                    signed_error = f"the signing stack's {exc}"
                else:
                    (await stack.enter_async_context(Watchers(signer))).fps.add(signed_fp)
            if await newest_segment(host, fp) is None:
                raise CaseSkipped("the mosaic's playlist lists no segment")
            urls = {"playlist": f"{host.gateway}/play/{fp}/index.m3u8", "segment": ""}
            if signer is not None and not signed_error:
                try:
                    if await newest_segment(signer, signed_fp) is None:
                        raise StackError("its mosaic's playlist lists no segment")
                    urls["signed_playlist"] = await check_signed(signer, signed_fp)
                except StackError as exc:
                    signed_error = f"the signing stack: {exc}"
            probe = await keepalive_probe(urls["playlist"])
            ctx.progress(
                f"one request at a time: {probe['reused_ms']:.1f} ms on a reused connection, "
                f"{probe['new_connection_ms']:.1f} ms on a new one"
            )
            if "signed_playlist" in urls and signer is not None:
                signed_probe = await keepalive_probe(urls["signed_playlist"])
                sizes = {"playlist": len(await host.playlist(fp)),
                         "signed_playlist": len(await signer.playlist(signed_fp))}  # fmt: skip
                ctx.progress(
                    f"signed URL: {signed_probe['reused_ms']:.1f} ms on a reused connection, "
                    f"{signed_probe['new_connection_ms']:.1f} ms on a new one; playlists of "
                    f"{sizes['signed_playlist']:,} B (signed) and {sizes['playlist']:,} B"
                )
            elif signed_error:
                ctx.progress(f"signed URLs not measured: {signed_error}")
            # (what, the stack wrk loads, the other one): A, B, then the segment, each round
            plan: list[tuple[str, StackHost, StackHost | None]] = [("playlist", host, signer)]
            if "signed_playlist" in urls and signer is not None:
                plan.append(("signed_playlist", signer, host))
            plan.append(("segment", host, signer))
            for r in range(rounds):
                for kind, target, other in plan:
                    if kind == "segment":
                        # The newest now: one picked earlier leaves the window (and 404s)
                        # within seconds. Fetched once, so wrk gets it from the cache.
                        segment, body = await latest_segment(host, fp)
                        urls["segment"] = f"{host.gateway}/play/{fp}/{segment}"
                    procs = await target.processes()
                    around = await other.processes() if other is not None else []
                    cpu = CpuWindow(procs).begin()
                    beside = CpuWindow(around).begin()
                    got = await wrk(urls[kind], seconds)
                    cpu.end()
                    beside.end()
                    roles = {k: v / cpu.seconds for k, v in cpu.by_role().items()}
                    got["cpu_per_s"] = roles
                    got["other_stack_cores"] = beside.spent() / beside.seconds
                    if kind == "segment":
                        got["segment"], got["segment_bytes"] = segment, len(body)
                    if kind == "signed_playlist" and got.get("non_2xx"):
                        assert target.http is not None
                        now = await target.http.get(urls[kind])
                        got["answer_after"] = f"{now.status_code} {now.text[:160]}"
                    runs[kind].append(got)
                    ctx.progress(
                        f"round {r + 1}/{rounds} {kind}: {got['rps']:,.0f} req/s, p50 "
                        f"{fmt(got['percentiles_ms'].get(50))} ms, p99 "
                        f"{fmt(got['percentiles_ms'].get(99))} ms; gateway "
                        f"{roles.get('host', 0):.2f} cores, nats-server "
                        f"{roles.get('nats-server', 0):.2f}"
                        + (f"; the other stack {got['other_stack_cores']:.2f}" if around else "")
                        + (f"; {got['non_2xx']:,} NON-2XX ANSWERS" if got.get("non_2xx") else "")
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
            size = median([g["segment_bytes"] for g in done])
            note += f"; {size:,.0f} B segments from the gateway's cache"
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
    results.append(signed_result(runs, signed_error, signed_probe, sizes, seconds))
    return results


def signed_result(
    runs: dict[str, list[dict[str, Any]]],
    error: str,
    probe: dict[str, float],
    sizes: dict[str, int],
    seconds: float,
) -> Result:
    """``signed_playlist_ratio``: the median of each round's signed ÷ unsigned playlist
    req/s; a ✗ that says why when it could not be measured or a signed run was refused."""
    name, unit = "signed_playlist_ratio", "× unsigned"
    target: dict[str, Any] = {"target": TARGET_SIGNED_RATIO, "op": ">="}
    signed, plain = runs["signed_playlist"], runs["playlist"]
    if error or not signed:
        reason = error or "no signed run"
        return Result(NAME, name, None, unit, ok=False, note=f"not measured: {reason}",
                      details={"error": reason}, **target)  # fmt: skip
    pairs = list(zip(signed, plain, strict=True))  # one of each per round
    ratios = [s["rps"] / p["rps"] if p["rps"] else float("nan") for s, p in pairs]
    ratio = median(ratios)

    def per_request_us(run: dict[str, Any]) -> float:
        """The gateway's CPU per answered request (µs)."""
        return run["cpu_per_s"].get("host", 0.0) / run["rps"] * 1e6 if run["rps"] else 0.0

    signed_us = median([per_request_us(s) for s, _ in pairs])
    plain_us = median([per_request_us(p) for _, p in pairs])
    extra_us = median([per_request_us(s) - per_request_us(p) for s, p in pairs])
    signed_rps = median([g["rps"] for g in signed])
    plain_rps = median([g["rps"] for g in plain])
    signed_gw = median([g["cpu_per_s"].get("host", 0.0) for g in signed])
    plain_gw = median([g["cpu_per_s"].get("host", 0.0) for g in plain])
    beside = median([g["other_stack_cores"] for g in (*signed, *plain)])
    refused = sum(g.get("non_2xx", 0) for g in signed)
    plain_refused = sum(g.get("non_2xx", 0) for g in plain)
    total = sum(g.get("requests", 0) for g in signed)
    note = (
        f"signed {signed_rps:,.0f} req/s (p99 "
        f"{fmt(median([g['percentiles_ms'].get(99, float('nan')) for g in signed]))} ms, "
        f"gateway {signed_gw:.2f} cores) vs unsigned {plain_rps:,.0f} ({plain_gw:.2f} cores), "
        f"median of {len(ratios)} interleaved pair(s); gateway CPU per request {signed_us:.0f} "
        f"µs signed vs {plain_us:.0f} µs ({extra_us:+.0f} µs); the other stack's mosaic "
        f"{beside:.2f} cores beside each run"
    )
    ok: bool | None = None
    if refused:
        ok = False
        after = "; ".join(sorted({g["answer_after"] for g in signed if "answer_after" in g}))
        then = f" (a GET after the run: {after})" if after else ""
        note = (
            f"REFUSED: {refused:,} of {total:,} signed answers were not 2xx{then}; the ratio "
            "compares refusals, not playlists; " + note
        )
    if plain_refused:
        ok = False
        note = f"{plain_refused:,} unsigned answers were not 2xx; " + note
    return Result(
        NAME, name, ratio, unit, ok=ok, note=note, **target,
        details={"ratios": ratios, "signed_runs": signed, "signed_rps": signed_rps,
                 "unsigned_rps": plain_rps, "gateway_us_per_request": {"signed": signed_us,
                 "unsigned": plain_us, "delta_per_pair": extra_us},
                 "one_at_a_time": probe, "playlist_bytes": sizes, "seconds": seconds,
                 "other_stack_cores": beside, "non_2xx": refused},
    )  # fmt: skip
