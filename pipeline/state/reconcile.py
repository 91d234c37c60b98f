"""The controller's decision, pure: desired work from state and time, then what to change.

Inputs are values (projected mosaics, the last viewer and worker heartbeat times, what runs,
the clock); the output is a :class:`Plan` of workers to start and stop. No I/O, no asyncio:
the lifecycle rules are tested directly on these functions.

Rules (mosaics):

- A mosaic is **watched** while its last viewer heartbeat is younger than ``idle_timeout``.
- Each watched mosaic wants one stitcher: its own, or, when mosaics differ only in their
  titles (one picture, :func:`~pipeline.state.mosaic.outputs`), the earliest one's, which then
  makes the stream for all of them; each source URL of the watched mosaics wants one
  grabber, however many mosaics show it, at the highest fps any of them needs, making every
  tile size they show it at (the tiles of a focus layout differ in size, and so do those of
  mosaics of other sizes or grids): it decodes the URL once and scales each frame to each size.
- A running worker nobody wants is stopped. A running grabber whose wanted spec differs only
  in its tile sizes or fps (a mosaic showing its source at another size started or stopped
  being watched) is **retiled**: told the new spec in place (``ctl.worker.<worker_id>``), so
  the tiles it goes on making never stop; only a new fps, or a box that needs another variant
  of a master playlist, opens its source again, in the same process. Any other worker whose
  spec changed, or a grabber that refuses or does not answer, is stopped as "changed" and
  started again with the new spec (its tiles then go without frames for a moment, up to
  1.6 s; the stitchers keep showing their last ones, a tile is dead only after 5 s). A wanted
  worker that is not running is started, unless it failed recently: restarts back off
  exponentially (``restart_backoff``).
- A running worker whose heartbeat is older than ``heartbeat_timeout`` (after a start grace of
  the same length) is restarted: stopped now, started on a later pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pipeline.messages.events import Tile
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec, tile_sizes
from pipeline.state.layouts import Rect
from pipeline.state.model import MosaicState, SessionState
from pipeline.state.mosaic import layout_of, outputs, source_key

MOSAIC_KINDS = ("grabber", "stitcher")


@dataclass(frozen=True)
class Timing:
    """The controller's clocks, in seconds."""

    idle_timeout: float = 300.0
    heartbeat_timeout: float = 10.0
    restart_backoff: float = 1.0
    restart_backoff_max: float = 30.0


@dataclass(frozen=True)
class Running:
    """A worker as the provider sees it."""

    spec: WorkerSpec
    started_at: float


@dataclass(frozen=True)
class Plan:
    """What to change now."""

    start: tuple[WorkerSpec, ...] = ()
    stop: tuple[tuple[str, str], ...] = ()
    """``(worker_id, reason)`` pairs."""
    watched: frozenset[str] = field(default_factory=frozenset)
    retile: tuple[GrabberSpec, ...] = ()
    """Running grabbers to tell their new spec (:func:`retilable`); stopped as "changed" when
    that fails."""


def watched(
    mosaics: Mapping[str, MosaicState], viewers: Mapping[str, float], now: float, idle: float
) -> frozenset[str]:
    """Fingerprints of the mosaics someone watched within ``idle`` seconds."""
    return frozenset(fp for fp in mosaics if now - viewers.get(fp, float("-inf")) < idle)


def _reads(
    mosaics: Mapping[str, MosaicState], fps: frozenset[str]
) -> Iterator[tuple[StitcherSpec, MosaicState, Tile, Rect]]:
    """For every tile of the watched mosaics ``fps``: the stitcher that makes its picture, its
    mosaic, the tile and its rectangle."""
    leaders = outputs(mosaics)
    for fp in sorted(fps):
        mosaic = mosaics[fp]
        # Mosaics that differ only in their titles show one picture: one stitcher, the
        # earliest's, makes it for all of them (pipeline.state.mosaic.outputs).
        stitcher = StitcherSpec(fp=leaders.get(fp, fp))
        for tile, rect in zip(mosaic.tiles, layout_of(mosaic).rects, strict=True):
            yield stitcher, mosaic, tile, rect


def grabber_id(url: str) -> str:
    """The worker id of the grabber of ``url``: one per URL, whatever its tile sizes."""
    return f"grabber-{source_key(url)}"


def desired(mosaics: Mapping[str, MosaicState], fps: frozenset[str]) -> dict[str, WorkerSpec]:
    """The workers the watched mosaics ``fps`` need, by worker id."""
    pulls: dict[str, tuple[set[tuple[int, int]], float]] = {}
    out: dict[str, WorkerSpec] = {}
    for stitcher, mosaic, tile, rect in _reads(mosaics, fps):
        out[stitcher.worker_id] = stitcher
        # One pull per URL, at the highest rate any mosaic needs, into every tile size any
        # shows it at (a focus mosaic's large tile, another mosaic's smaller ones).
        sizes, rate = pulls.get(tile.url, (set(), 0.0))
        sizes.add((rect.w, rect.h))
        pulls[tile.url] = (sizes, max(rate, float(mosaic.fps)))
    for url, (sizes, rate) in pulls.items():
        grabber = GrabberSpec(key=source_key(url), url=url, sizes=tile_sizes(sizes), fps=rate)
        out[grabber.worker_id] = grabber
    return out


def affinity(mosaics: Mapping[str, MosaicState], fps: frozenset[str]) -> dict[str, frozenset[str]]:
    """For every worker the watched mosaics ``fps`` need, the workers it should run beside (by
    worker id): a grabber, the stitchers that read its source (its frames then never cross
    machines); a stitcher, the grabbers of its tiles. What placement keeps together."""
    near: dict[str, set[str]] = {}
    for stitcher, _, tile, _ in _reads(mosaics, fps):
        grabber = grabber_id(tile.url)
        near.setdefault(grabber, set()).add(stitcher.worker_id)
        near.setdefault(stitcher.worker_id, set()).add(grabber)
    return {wid: frozenset(others) for wid, others in near.items()}


def start_order(spec: WorkerSpec) -> tuple[int, str]:
    """The order new workers are started in: stitchers first, so that placement can put each
    grabber beside the stitcher that reads it; then sessions and grabbers, by id."""
    return (0 if spec.kind == "stitcher" else 1, spec.worker_id)


def backoff(failures: int, timing: Timing) -> float:
    """Seconds to wait before restarting a worker that failed ``failures`` times in a row."""
    if failures <= 0:
        return 0.0
    return float(min(timing.restart_backoff * 2 ** (failures - 1), timing.restart_backoff_max))


def plan(
    *,
    mosaics: Mapping[str, MosaicState],
    viewers: Mapping[str, float],
    beats: Mapping[str, float],
    running: Mapping[str, Running],
    failures: Mapping[str, tuple[int, float]],
    now: float,
    timing: Timing,
) -> Plan:
    """Decide what to start and stop.

    ``viewers``: fp → time of the last viewer heartbeat. ``beats``: worker id → time of its
    last heartbeat. ``failures``: worker id → (failures in a row, time of the last one).
    """
    fps = watched(mosaics, viewers, now, timing.idle_timeout)
    want = desired(mosaics, fps)
    stop: list[tuple[str, str]] = []
    retile: list[GrabberSpec] = []
    for wid, run in sorted(running.items()):
        if run.spec.kind not in MOSAIC_KINDS:
            continue  # sessions decide about their own workers (session_plan)
        spec = want.get(wid)
        if spec is None:
            stop.append((wid, "not-needed"))
        elif spec != run.spec:
            if isinstance(spec, GrabberSpec) and retilable(run.spec, spec):
                retile.append(spec)
            else:
                stop.append((wid, "changed"))
        elif now - run.started_at > timing.heartbeat_timeout and (
            now - beats.get(wid, run.started_at) > timing.heartbeat_timeout
        ):
            stop.append((wid, "heartbeat-lost"))
    stopping = {wid for wid, _ in stop}
    start = []
    for wid, spec in sorted(want.items()):
        if wid in running and wid not in stopping:
            continue
        if wid in stopping:
            continue  # started again on a later pass, once it is gone
        count, last = failures.get(wid, (0, float("-inf")))
        if now - last < backoff(count, timing):
            continue
        start.append(spec)
    return Plan(
        start=tuple(sorted(start, key=start_order)),
        stop=tuple(stop),
        watched=fps,
        retile=tuple(retile),
    )


def retilable(running: WorkerSpec, wanted: WorkerSpec) -> bool:
    """Whether the worker running ``running`` can be told ``wanted`` in place: both grabbers of
    the same source (key and URL), whatever their tile sizes and fps."""
    return (
        isinstance(running, GrabberSpec)
        and isinstance(wanted, GrabberSpec)
        and (running.key, running.url) == (wanted.key, wanted.url)
    )


# --- JIT sessions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionTiming:
    """The original JIT timeouts, in seconds."""

    running_timeout: float = 120.0
    """A requested session must be running (its worker ready) within this."""
    idle_timeout: float = 120.0
    """A running session with no viewer for this long ends."""


@dataclass(frozen=True)
class SessionFact:
    """A session fact the controller should append: ``kind`` is "started", "ended" or "failed"."""

    session_id: str
    kind: str
    reason: str = ""


@dataclass(frozen=True)
class SessionPlan:
    """What to change for sessions now."""

    start: tuple[WorkerSpec, ...] = ()
    stop: tuple[tuple[str, str], ...] = ()
    facts: tuple[SessionFact, ...] = ()


def jit_spec(session_id: str) -> JitSpec:
    """The worker that serves a session."""
    return JitSpec(session_id=session_id)


def session_plan(
    *,
    sessions: Mapping[str, SessionState],
    viewers: Mapping[str, float],
    ready: Mapping[str, float],
    running: Mapping[str, Running],
    failures: Mapping[str, tuple[int, float]],
    now: float,
    timing: SessionTiming,
    restart: Timing,
) -> SessionPlan:
    """Decide for JIT sessions.

    ``viewers``: session id → last viewer heartbeat. ``ready``: worker id → time its
    heartbeat first said ready. A requested session gets a worker; once the worker is ready the
    session is "started"; it fails if not running within ``running_timeout``, and ends after
    ``idle_timeout`` without a viewer. An ended or failed session's worker is stopped.
    """
    start: list[WorkerSpec] = []
    stop: list[tuple[str, str]] = []
    facts: list[SessionFact] = []
    for sid, state in sorted(sessions.items()):
        spec = jit_spec(sid)
        wid = spec.worker_id
        live = state.phase in ("requested", "running")
        if not live:
            if wid in running:
                stop.append((wid, f"session-{state.phase}"))
            continue
        if state.phase == "requested":
            if wid in ready:
                facts.append(SessionFact(sid, "started"))
            elif now - state.requested_at > timing.running_timeout:
                facts.append(
                    SessionFact(sid, "failed", f"not running within {timing.running_timeout:g} s")
                )
                if wid in running:
                    stop.append((wid, "session-failed"))
                continue
        else:
            since = max(viewers.get(sid, float("-inf")), state.started_at or state.requested_at)
            if now - since > timing.idle_timeout:
                facts.append(SessionFact(sid, "ended", "idle"))
                if wid in running:
                    stop.append((wid, "session-ended"))
                continue
        if wid not in running:
            count, last = failures.get(wid, (0, float("-inf")))
            if now - last >= backoff(count, restart):
                start.append(spec)
    return SessionPlan(start=tuple(start), stop=tuple(stop), facts=tuple(facts))
