"""The newest frame of one source in shared memory, for stitchers on the grabber's machine.

Carrying every tile frame through NATS costs a thread hop and a copy in the grabber, a copy in
nats-server (plus JetStream storing it in ``FRAMES``) and a parse in every stitcher: ~0.8 ms
per tile frame, a quarter of a mosaic's CPU (bench case 1). A stitcher only ever shows the
newest frame of each tile at its own tick, so on one machine the grabber writes each frame into
a small shared-memory file and the stitcher reads it when it composes. NATS still carries one
*seed* frame per second (``FRAMES`` keeps a picture for a stitcher anywhere, and for a late
one), so correctness never depends on the slot: it only makes the local path cheap.

One file per source and server: ``/dev/shm/tessera-<uid>/<namespace>-<source_id>``, where the
namespace is a hash of the NATS server's address (grabbers and stitchers of one Tessera share
it; two test sessions or stacks do not). Layout: a 64-byte header, then the pixels (yuv420p).
The header is a seqlock: the writer makes ``lock`` odd, writes, makes it even again; a reader
copies and retries (or skips this tick) when ``lock`` was odd or changed meanwhile. The writer
creates a new file (a new inode) when it starts, so a reader of a dead grabber's file notices
the replacement; frames carry their wall time, so a stale file is never shown as live.

Not for machines apart: a stitcher on another host finds no file and uses the NATS frames.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct("<4sHHQQddIII")  # magic, version, flags, lock, seq, pts, wall, w, h, n
HEADER_SIZE = 64
_MAGIC = b"TSFS"
_VERSION = 1
_LOCK = struct.Struct("<Q")
_LOCK_AT = 8


def root_dir() -> Path:
    """Where slots live: tmpfs, private to this user."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    return base / f"tessera-{os.getuid()}"


def namespace(nats_url: str) -> str:
    """A short name for one NATS server (credentials stripped before hashing)."""
    hosts = ",".join(part.rsplit("@", 1)[-1] for part in nats_url.split(","))
    return hashlib.sha256(hosts.encode()).hexdigest()[:12]


def slot_path(ns: str, source_id: str) -> Path:
    """The file of one source's slot."""
    return root_dir() / f"{ns}-{source_id}"


def remove_namespace(ns: str) -> int:
    """Remove every slot of namespace ``ns`` (its grabbers are gone: a stack stopping, or
    grabbers killed before they could clean up); the number removed."""
    removed = 0
    try:
        entries = list(root_dir().iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        if path.name.startswith((f"{ns}-", f".{ns}-")):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def payload_size(width: int, height: int) -> int:
    """Bytes of one yuv420p picture."""
    return width * height * 3 // 2


@dataclass(frozen=True)
class SlotFrame:
    """A frame read from a slot."""

    seq: int
    pts: float
    wall: float
    width: int
    height: int
    pixels: bytes


class SlotWriter:
    """The grabber's side: ``write()`` from its decode thread; ``close()`` removes the file."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path = path
        self.width, self.height = width, height
        self.size = payload_size(width, height)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + self.size)
            self._mm = mmap.mmap(fd, HEADER_SIZE + self.size)
            self._inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        _HEADER.pack_into(self._mm, 0, _MAGIC, _VERSION, 0, 0, 0, 0.0, 0.0, width, height, 0)
        # A new inode under the name: readers of an older writer's file see the change.
        os.replace(tmp, path)
        self._lock = 0

    def write(
        self, seq: int, pts: float, wall: float, pixels: bytes | bytearray | memoryview
    ) -> None:
        """Publish one frame (the whole picture, ``payload_size`` bytes)."""
        if len(pixels) != self.size:
            raise ValueError(f"a {self.width}x{self.height} frame is {self.size} bytes")
        mm = self._mm
        self._lock += 1  # odd: being written
        _LOCK.pack_into(mm, _LOCK_AT, self._lock)
        mm[HEADER_SIZE : HEADER_SIZE + self.size] = pixels
        _HEADER.pack_into(
            mm,
            0,
            _MAGIC,
            _VERSION,
            0,
            self._lock,
            seq,
            pts,
            wall,
            self.width,
            self.height,
            self.size,
        )
        self._lock += 1  # even: complete
        _LOCK.pack_into(mm, _LOCK_AT, self._lock)

    def close(self) -> None:
        """Remove the slot (readers keep their mapping until they notice). Safe twice."""
        if not self._mm.closed:
            self._mm.close()
            try:
                # Only our own file: a newer writer (a restarted grabber) may own the name.
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            except FileNotFoundError:
                pass


class SlotReader:
    """A stitcher's side: ``read()`` returns a frame newer than the last one read, or None.

    Cheap when nothing changed (one 8-byte read); maps the file when it appears and again when
    a new writer replaced it (checked every ``recheck`` reads)."""

    def __init__(self, path: Path, *, recheck: int = 25) -> None:
        self.path = path
        self._recheck = recheck
        self._mm: mmap.mmap | None = None
        self._inode = 0
        self._reads = 0
        self._last_lock = -1
        self._last_seq = -1
        self.torn = 0
        """Reads skipped because the writer was writing (retried at the next tick)."""

    def _attach(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            inode = os.fstat(fd).st_ino
            size = os.fstat(fd).st_size
            if inode == self._inode or size < HEADER_SIZE:
                return
            self.close()
            self._mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            self._inode = inode
            self._last_lock = self._last_seq = -1
        finally:
            os.close(fd)

    def read(self) -> SlotFrame | None:
        """The newest frame if it is new since the last call, else None."""
        if self._mm is None or self._reads % self._recheck == 0:
            self._attach()
        self._reads += 1
        mm = self._mm
        if mm is None:
            return None
        (lock,) = _LOCK.unpack_from(mm, _LOCK_AT)
        if lock == self._last_lock or lock % 2 or lock == 0:
            if lock % 2:
                self.torn += 1
            return None
        magic, version, _, _, seq, pts, wall, width, height, size = _HEADER.unpack_from(mm, 0)
        if magic != _MAGIC or version != _VERSION or HEADER_SIZE + size > len(mm):
            return None
        pixels = mm[HEADER_SIZE : HEADER_SIZE + size]
        (after,) = _LOCK.unpack_from(mm, _LOCK_AT)
        if after != lock:
            self.torn += 1
            return None
        self._last_lock = lock
        if seq == self._last_seq:
            return None
        self._last_seq = seq
        return SlotFrame(seq, pts, wall, width, height, pixels)

    def close(self) -> None:
        """Unmap. Safe twice."""
        if self._mm is not None:
            self._mm.close()
            self._mm = None
            self._inode = 0
