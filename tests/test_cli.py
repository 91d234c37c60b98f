"""The `tessera` command as a user runs it: real processes, real nats-server, real HTTP."""

from __future__ import annotations

import fractions
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

TESSERA = [sys.executable, "-m", "pipeline"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "TESSERA_", "JIT_"))}
    env["TESSERA_DATA_DIR"] = str(data_dir)
    return env


def _children(pid: int) -> list[int]:
    """Every descendant process id of ``pid`` (from /proc)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        path = Path(f"/proc/{parent}/task/{parent}/children")
        try:
            kids = [int(k) for k in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            kids = []
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _playlist_of(create_link: str) -> str:
    """GET a /create link once and return where it redirects (the playlist): polling the
    playlist, not /create, is what a player does (and /create is rate limited)."""
    with urllib.request.urlopen(create_link, timeout=10) as resp:  # follows the 302
        return str(resp.url)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`tessera up` on a free port; yields the process and the gateway URL."""
    proc = subprocess.Popen(
        [*TESSERA, "up", "--port", "0"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("Tessera is up: "):
            raise AssertionError(
                f"no start line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield proc, line.split(": ", 1)[1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes both pipes


def test_up_serves_healthz_and_ctrl_c_leaves_nothing(
    up: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    proc, url = up
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
        assert resp.status == 200
        body = json.loads(resp.read())
    assert body["status"] == "ok"
    assert body["nats"]["connected"] is True
    assert body["jetstream"]["missing"] == []
    assert {"EVENTS", "HEARTBEATS", "FRAMES", "KV_mosaics", "OBJ_segments"} <= set(
        body["jetstream"]["streams"]
    )
    nats_url = (tmp_path / "nats.url").read_text().strip()
    assert nats_url.startswith("nats://127.0.0.1:")
    children = _children(proc.pid)
    assert children, "the embedded nats-server runs as a child"

    # A second `up` on the same data dir refuses, with one line.
    second = subprocess.run(
        [*TESSERA, "up", "--port", "0"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert second.stderr.strip().count("\n") == 0
    assert "already runs with data dir" in second.stderr

    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    for pid in children:
        assert not _alive(pid), f"child {pid} outlived `tessera up`"
    assert not (tmp_path / "nats.url").exists()


def test_events_tail_and_replay_against_a_running_up(
    up: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    proc, _url = up
    env = _env(tmp_path)
    tail = subprocess.run(
        [*TESSERA, "events", "tail", "--no-follow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == ""  # nothing happened yet
    replay = subprocess.run(
        [*TESSERA, "events", "replay"], env=env, capture_output=True, text=True, timeout=30
    )
    assert replay.returncode == 1
    assert replay.stderr.strip() == (
        "tessera: error: a projector is running (heartbeat is fresh): "
        "stop `tessera up` before a replay"
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_a_kill_9_of_up_takes_the_nats_server_with_it(
    up: tuple[subprocess.Popen[str], str],
) -> None:
    proc, _url = up
    children = _children(proc.pid)
    assert children
    proc.kill()
    proc.wait(10)
    _wait(lambda: not any(_alive(pid) for pid in children), 10, "nats-server to die with parent")


@pytest.mark.parametrize(
    ("argv", "env_extra", "code", "message"),
    [
        (["up", "--port", "http"], {}, 2, "tessera: error: --port='http': not a number"),
        (["up"], {"JIT_ORCHESTRATOR_PORT": "70000"}, 2, "JIT_ORCHESTRATOR_PORT='70000'"),
        (["events", "tail"], {}, 1, "tessera: error: no NATS to connect to"),
        (["events", "tail"], {"NATS_URL": "nats://127.0.0.1:1"}, 1, "cannot reach NATS"),
        # A worker given its whole spec (as a spawned one is) decodes it and goes to connect.
        (
            ["worker", "--spec", '{"type": "spec.jit/1", "session_id": "s1"}'],
            {},
            1,
            "tessera: error: no NATS to connect to",
        ),
        (["worker", "--spec", "{}"], {}, 1, "tessera: error: cannot decode worker spec"),
        (["worker"], {}, 1, "tessera worker needs a KIND (grabber, stitcher or jit) or --spec"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, argv: list[str], env_extra: dict[str, str], code: int, message: str
) -> None:
    env = _env(tmp_path) | env_extra
    result = subprocess.run([*TESSERA, *argv], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_demo_prints_a_link_that_becomes_a_live_mosaic(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*TESSERA, "demo", "--port", "0", "--sources", "2"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("Tessera demo is up with 2 live cameras")
        link = lines[1].split("mosaic:", 1)[1].strip()
        assert "/create?urls=" in link

        playlist = _playlist_of(link)

        def has_segment() -> bool:
            with urllib.request.urlopen(playlist, timeout=5) as resp:
                return "#EXTINF" in resp.read().decode()

        _wait(has_segment, 30, "the demo mosaic's first segment")
        children = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        for pid in children:
            assert not _alive(pid), f"child {pid} outlived `tessera demo`"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_sigterm_with_a_mosaic_and_a_session_running_stops_cleanly_and_resumes(
    tmp_path: Path,
) -> None:
    """SIGTERM to `tessera demo` (= `up` + cameras) with a mosaic and a JIT session running:
    exit within the shutdown deadline, no child left, no event lost; the next start resumes
    the projections where they were instead of replaying them."""
    from tests.jitmedia import make_video

    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "clip.mp4", frames=100, rate=fractions.Fraction(25))
    env = _env(tmp_path) | {"JIT_MEDIA_ROOTS": str(media), "TESSERA_SHUTDOWN_TIMEOUT": "6"}
    proc = subprocess.Popen(
        [*TESSERA, "demo", "--port", "0", "--sources", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        link = lines[1].split("mosaic:", 1)[1].strip()
        base = link.split("/create", 1)[0]

        playlist = _playlist_of(link)

        def has_segment() -> bool:
            with urllib.request.urlopen(playlist, timeout=5) as resp:
                return "#EXTINF" in resp.read().decode()

        _wait(has_segment, 30, "the mosaic's first segment")
        request = urllib.request.Request(
            f"{base}/session",
            data=json.dumps({"inputs": [{"url": str(media / "clip.mp4")}]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            sid = json.loads(resp.read())["id"]

        def session_running() -> bool:
            with urllib.request.urlopen(f"{base}/session/{sid}", timeout=5) as resp:
                return bool(json.loads(resp.read())["state"] == "running")

        _wait(session_running, 30, "the session to run")
        before = subprocess.run(
            [*TESSERA, "events", "tail", "--all", "--no-follow"], env=env,
            capture_output=True, text=True, timeout=30,
        ).stdout.splitlines()  # fmt: skip
        children = _children(proc.pid)
        assert len(children) >= 4, "nats-server, 2 grabbers, a stitcher and a jit worker"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 6 + 1, "took longer than the shutdown deadline"
        for pid in children:
            assert not _alive(pid), f"child {pid} outlived the shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)

    # Restart: the projector resumes at its ack floor; no event is folded twice.
    second = subprocess.Popen(
        [*TESSERA, "up", "--port", "0"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert second.stdout is not None
        assert second.stdout.readline().startswith("Tessera is up")
        after = subprocess.run(
            [*TESSERA, "events", "tail", "--all", "--no-follow"], env=env,
            capture_output=True, text=True, timeout=30,
        ).stdout.splitlines()  # fmt: skip
        assert after[: len(before)] == before, "an event was lost or changed"
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()
        _, second_err = second.communicate(timeout=10)
    first_seq = [line for line in second_err.splitlines() if "projector started" in line]
    assert first_seq, second_err
    resumed_from = int(first_seq[0].rsplit("from_seq=", 1)[1].split()[0])
    assert resumed_from > len(before) - 5, f"replayed from {resumed_from}: {first_seq[0]}"
    assert "Traceback" not in err + second_err


def test_tessera_jit_runs_one_session_and_exits_when_it_ends(tmp_path: Path) -> None:
    from tests.jitmedia import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=50, rate=fractions.Fraction(25))
    ok = subprocess.run(
        [*TESSERA, "jit", "-i", str(clip), "--technical-timeout", "2", "--port", "0",
         "--lowres", "0"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("Session ") and "/session/" in lines[1] and "/view" in lines[1]
    assert json.loads(lines[-1]) == {"state": "ended", "reason": "idle"}

    bad = subprocess.run(
        [*TESSERA, "jit", "-i", str(tmp_path / "missing.mov"), "--port", "0"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .startswith("tessera: error: the session failed: input 1: cannot open")
    )
    assert "Traceback" not in bad.stderr
