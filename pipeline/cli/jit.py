"""``tessera jit -i URL [channel_count=N] [id=X] [URL ...] [options]``: one session, locally.

The original JIT program's command line: it runs Tessera on this machine (as ``tessera up``),
starts one session for the given inputs, prints the viewer URL, and exits when the session
ends (0) or fails (1, with the cause in one line), or on Ctrl-C. Local files given on the
command line are allowed by making their folders media roots for this run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipeline.cli.up import Stack
from pipeline.config import settings as config_mod
from pipeline.config.settings import Config
from pipeline.errors import ConfigError, TesseraError
from pipeline.runtime.service import run_until_signal
from pipeline.runtime.tasks import cancel_and_wait

# (flag, SessionOptions field, type)
OPTIONS: tuple[tuple[str, str, type], ...] = (
    ("--lowres", "lowres", int),
    ("--sample-aspect-num", "sample_aspect_num", int),
    ("--sample-aspect-den", "sample_aspect_den", int),
    ("--colorspace", "colorspace", str),
    ("--threads", "threads", int),
    ("--thread-type", "thread_type", str),
    ("--width", "width", int),
    ("--height", "height", int),
    ("--frame-rate-num", "frame_rate_num", int),
    ("--frame-rate-den", "frame_rate_den", int),
    ("--region", "region", str),
    ("--bitrate", "bitrate", int),
    ("--channels", "channels", int),
    ("--cho", "cho", int),
    ("--duration", "duration", int),
    ("--compare", "compare", str),
    ("--compare-offset", "compare_offset", int),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The original JIT program's flags, plus Tessera's settings."""
    parser.add_argument(
        "-i",
        "--input",
        nargs="+",
        action="append",
        required=True,
        metavar="URL [channel_count=N] [id=X]",
        help="inputs: the first is the video (with --compare side-by-side|wipe|difference, the "
        "first two: A and B), the others audio; each URL may be followed by "
        "channel_count=N and id=X (repeat -i or list several URLs)",
    )
    for flag, field, kind in OPTIONS:
        metavar = "N" if kind is int else field.upper()
        parser.add_argument(flag, dest=f"opt_{field}", type=kind, default=None, metavar=metavar)
    parser.add_argument(
        "--bt2100-tone-mapping", dest="opt_bt2100_tone_mapping", action="store_true"
    )
    parser.add_argument(
        "--technical-timeout",
        type=float,
        default=None,
        help="seconds without a viewer before the session ends (JIT_SESSION_IDLE_TIMEOUT)",
    )
    config_mod.add_arguments(parser)


def parse_inputs(groups: list[list[str]]) -> list[dict[str, Any]]:
    """``[["a.mov", "b.wav", "channel_count=6", "id=mix"]]`` → the session's inputs."""
    inputs: list[dict[str, Any]] = []
    for token in (t for group in groups for t in group):
        key, sep, value = token.partition("=")
        if sep and key in ("channel_count", "id") and "/" not in key:
            if not inputs:
                raise ConfigError(f"-i: {token!r} comes before any URL")
            if key == "channel_count":
                if not value.isdigit():
                    raise ConfigError(f"-i: channel_count={value!r}: not a whole number")
                inputs[-1]["channel_count"] = int(value)
            else:
                inputs[-1]["id"] = value
        else:
            inputs.append({"url": _absolute(token)})
    return inputs


def _absolute(url: str) -> str:
    if urlsplit(url).scheme in ("http", "https", "s3", "file"):
        return url
    return str(Path(url).expanduser().resolve())


def _local_roots(inputs: list[dict[str, Any]]) -> list[str]:
    roots = []
    for item in inputs:
        url = str(item["url"])
        if url.startswith("/"):
            roots.append(str(Path(url).parent))
        elif url.startswith("file://"):
            roots.append(str(Path(url[7:]).parent))
    return roots


async def run(config: Config, args: argparse.Namespace) -> int:
    """Run one session until it ends, fails or Ctrl-C."""
    inputs = parse_inputs(args.input)
    body: dict[str, Any] = {"inputs": inputs}
    for name, value in vars(args).items():
        if name.startswith("opt_") and value not in (None, False):
            body[name[4:]] = value
    roots = [r for r in config.media_roots.split(":") if r] + _local_roots(inputs)
    changes: dict[str, Any] = {"media_roots": ":".join(dict.fromkeys(roots))}
    if args.technical_timeout is not None:
        changes["session_idle_timeout"] = args.technical_timeout
    stack = Stack(dataclasses.replace(config, **changes))
    outcome: dict[str, Any] = {}

    class Session:
        async def start(self) -> None:
            await stack.start()
            assert stack.gateway is not None
            base = stack.gateway.url
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                got = await http.post("/session", json=body)
                if got.status_code != 201:
                    raise TesseraError(f"the session was refused: {got.json()['error']}")
                view = got.json()
            sid = view["id"]
            print(
                f"Session {sid} for {inputs[0]['url']}\n"
                f"  review:  {base}/session/{sid}/view\n"
                f"  WHEP:    {view['whep_url']}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            outcome["task"] = asyncio.create_task(self._watch(base, sid))

        async def _watch(self, base: str, sid: str) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                while True:
                    state = (await http.get(f"/session/{sid}")).json()
                    if state["state"] in ("ended", "failed"):
                        outcome.update(state=state["state"], reason=state["reason"])
                        os.kill(os.getpid(), signal.SIGTERM)  # ends run_until_signal
                        return
                    await asyncio.sleep(1.0)

        async def stop(self) -> None:
            await cancel_and_wait(outcome.get("task"))
            await stack.stop()

    await run_until_signal(Session(), force=stack.kill)
    if outcome.get("state") == "failed":
        raise TesseraError(f"the session failed: {outcome['reason']}")
    if "state" in outcome:
        print(json.dumps({"state": outcome["state"], "reason": outcome["reason"]}))
    return 0
