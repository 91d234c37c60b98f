"""Sweeping seek proxies (:func:`~pipeline.producers.jit.proxy.stale_proxies`, :func:`~pipeline.
producers.jit.proxy.sweep`): a folder is removed only when nothing changed in it for
``SWEEP_AFTER`` s and its session no longer runs; the worker's own is never a candidate."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.producers.jit import proxy


def folder(root: Path, name: str, age: float) -> Path:
    made = root / name
    made.mkdir(parents=True)
    (made / "chunk-0000.mjpeg").write_bytes(b"\xff\xd8")
    then = time.time() - age
    for path in (made / "chunk-0000.mjpeg", made):
        os.utime(path, (then, then))
    return made


def test_only_old_folders_of_sessions_that_ended_go(tmp_path: Path) -> None:
    old = 2 * proxy.SWEEP_AFTER
    ended = folder(tmp_path, "e" * 32, old)
    running = folder(tmp_path, "a" * 32, old)
    fresh = folder(tmp_path, "f" * 32, 10)
    own = folder(tmp_path, "0" * 32, old)
    odd = folder(tmp_path, "lost+found", old)
    (tmp_path / "a-file").write_bytes(b"")
    stale = proxy.stale_proxies(tmp_path, "0" * 32, time.time())
    assert sorted(p.name for p in stale) == ["a" * 32, "e" * 32]  # not lost+found: no session's
    assert proxy.sweep(stale, {"a" * 32}) == [ended]
    assert not ended.exists() and running.exists() and fresh.exists() and own.exists()
    assert odd.exists()


def test_a_file_written_lately_keeps_its_folder(tmp_path: Path) -> None:
    made = folder(tmp_path, "b" * 32, 2 * proxy.SWEEP_AFTER)
    (made / "chunk-0001.mjpeg").write_bytes(b"\xff\xd8")  # now
    assert proxy.stale_proxies(tmp_path, "", time.time()) == []


def test_no_root_no_candidates(tmp_path: Path) -> None:
    assert proxy.stale_proxies(tmp_path / "none", "s", time.time()) == []
