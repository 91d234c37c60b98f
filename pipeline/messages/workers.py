"""What one worker does: a :data:`WorkerSpec`, the same value from the controller's decision to
the worker process.

The controller decides specs (:mod:`pipeline.state.reconcile`), a :class:`StartWorker` carries
one whole to an agent, and a provider hands it whole to the fork server or to a spawned
``tessera worker --spec JSON``, where it is decoded once and run (:mod:`pipeline.workers.run`).
Nothing turns it into strings on the way, so what a worker runs is exactly what was decided.

A worker's id is ``<kind>-<target>`` (``grabber-<source_id>``, ``stitcher-<fp>``,
``jit-<session_id>``): a function of what it does, so starting it twice is a no-op. The
controller restarts a running worker whose spec is no longer equal to the wanted one (struct
equality: every field counts).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from pipeline.messages.events import WorkerKind


class _Spec(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    kind: ClassVar[WorkerKind]

    @property
    def target(self) -> str:
        """What the worker works on: a source id, a mosaic fingerprint or a session id."""
        raise NotImplementedError

    @property
    def worker_id(self) -> str:
        """``<kind>-<target>``."""
        return f"{self.kind}-{self.target}"


class GrabberSpec(_Spec, frozen=True, tag="spec.grabber/1"):
    """Pull ``url`` into ``width`` x ``height`` tile frames on ``frames.<source_id>``."""

    kind: ClassVar[Literal["grabber"]] = "grabber"
    source_id: str
    url: str
    width: int
    height: int
    fps: float = 25.0

    @property
    def target(self) -> str:
        return self.source_id


class StitcherSpec(_Spec, frozen=True, tag="spec.stitcher/1"):
    """Compose mosaic ``fp`` into HLS (its tiles are read from the projected state)."""

    kind: ClassVar[Literal["stitcher"]] = "stitcher"
    fp: str

    @property
    def target(self) -> str:
        return self.fp


class JitSpec(_Spec, frozen=True, tag="spec.jit/1"):
    """Serve JIT session ``session_id`` (its request is read from the projected state)."""

    kind: ClassVar[Literal["jit"]] = "jit"
    session_id: str

    @property
    def target(self) -> str:
        return self.session_id


WorkerSpec = GrabberSpec | StitcherSpec | JitSpec
"""One worker to run."""
