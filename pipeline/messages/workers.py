"""What one worker does: a :data:`WorkerSpec`, the same value from the controller's decision to
the worker process.

The controller decides specs (:mod:`pipeline.state.reconcile`), a :class:`StartWorker` carries
one whole to an agent, and a provider hands it whole to the fork server or to a spawned
``tessera worker --spec JSON``, where it is decoded once and run (:mod:`pipeline.workers.run`).
Nothing turns it into strings on the way, so what a worker runs is exactly what was decided.

A worker's id is ``<kind>-<target>`` (``grabber-<source key>``, ``stitcher-<fp>``,
``jit-<session_id>``): a function of what it does, so starting it twice is a no-op. The
controller restarts a running worker whose spec is no longer equal to the wanted one (struct
equality: every field counts).
"""

from __future__ import annotations

from collections.abc import Iterable
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


class GrabberSpec(_Spec, frozen=True, tag="spec.grabber/2"):
    """Pull ``url`` once, at ``fps`` at most, into a tile frame of each of ``sizes`` (width,
    height; the largest first): each size on ``frames.<key>-<W>x<H>``
    (:func:`tile_source_id`), the subject the stitchers of that size read.

    Version 2: one grabber per URL serves every tile size that the watched mosaics show it
    at (version 1 was one grabber per URL and size: ``source_id``, ``width``, ``height``).
    """

    kind: ClassVar[Literal["grabber"]] = "grabber"
    key: str
    """The source key of ``url`` (:func:`pipeline.state.mosaic.source_key`)."""
    url: str
    sizes: tuple[tuple[int, int], ...]
    """The tile sizes, largest first (:func:`tile_sizes`); the largest decides the rendition."""
    fps: float = 25.0

    @property
    def target(self) -> str:
        return self.key

    @property
    def source_ids(self) -> tuple[str, ...]:
        """The source id of each size, in the order of :attr:`sizes`."""
        return tuple(tile_source_id(self.key, w, h) for w, h in self.sizes)


def tile_source_id(key: str, width: int, height: int) -> str:
    """The source id of source ``key`` at a ``width`` x ``height`` tile: ``<key>-<W>x<H>``."""
    return f"{key}-{width}x{height}"


def tile_sizes(sizes: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``sizes`` once each, largest (by area, then width) first: a spec's canonical order, so
    that two specs of the same sizes are equal."""
    return tuple(sorted(set(sizes), key=lambda s: (s[0] * s[1], s[0], s[1]), reverse=True))


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
