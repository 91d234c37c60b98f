"""Where a Python process spends its time, with ``py-spy`` (``pip install py-spy``; optional):
sample it for a few seconds, then sum the samples by the package of the innermost Python frame
("self" time: uvicorn, h11, starlette, nats, asyncio, gateway, pipeline, ...), by group of
packages (:data:`GROUPS`) and by function. Only samples where the process was busy count.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^:()]+)(?::\d+)?\)$")


def available() -> bool:
    """True when py-spy is on PATH."""
    return shutil.which("py-spy") is not None


GROUPS = {
    "asyncio": "event loop and sockets (asyncio)",
    "selectors": "event loop and sockets (asyncio)",
    "uvicorn": "HTTP server (uvicorn, h11)",
    "h11": "HTTP server (uvicorn, h11)",
    "httptools": "HTTP server (uvicorn, h11)",
    "starlette": "framework and metrics (starlette, prometheus)",
    "starlette_exporter": "framework and metrics (starlette, prometheus)",
    "prometheus_client": "framework and metrics (starlette, prometheus)",
    "nats": "NATS client (nats-py)",
    "msgspec": "messages (msgspec, json)",
    "json": "messages (msgspec, json)",
    "gateway": "Tessera (gateway, pipeline)",
    "pipeline": "Tessera (gateway, pipeline)",
}
"""Packages summed into the groups a summary names."""


def _package(path: str) -> str:
    """The top-level package of a frame's file (py-spy prints paths relative to sys.path)."""
    parts = Path(path).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if len(parts) > 1:
        return parts[0]
    return Path(path).stem


async def sample(pid: int, seconds: float, out: Path, rate: int = 100) -> dict[str, object]:
    """Sample ``pid`` for ``seconds``; return the top packages and functions by self time."""
    proc = await asyncio.create_subprocess_exec(
        "py-spy", "record", "--nonblocking", "-r", str(rate), "-d", str(max(1, round(seconds))),
        "-p", str(pid), "-f", "raw", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": "py-spy did not finish"}
    if proc.returncode != 0:
        return {"error": err.decode(errors="replace").strip().splitlines()[-1:]}
    return await asyncio.to_thread(summarise, out)


def summarise(out: Path) -> dict[str, object]:
    """The top packages, groups and functions of a py-spy raw profile."""
    if not out.exists():
        return {"error": "py-spy wrote no profile"}
    packages: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        for name in {_short(frame) for frame in frames}:
            inclusive[name] += int(count)
        match = _FRAME.match(leaf)
        n = int(count)
        total += n
        if match is None:
            packages["(native)"] += n
            functions[leaf] += n
            continue
        packages[_package(match["path"])] += n
        functions[f"{match['func']} ({Path(match['path']).name})"] += n
    if not total:
        return {"error": "no samples"}
    groups: collections.Counter[str] = collections.Counter()
    for package, n in packages.items():
        groups[GROUPS.get(package, "other")] += n
    return {
        "samples": total,
        "groups": {k: round(v / total, 3) for k, v in groups.most_common()},
        "packages": {k: round(v / total, 3) for k, v in packages.most_common(10)},
        "functions": {k: round(v / total, 3) for k, v in functions.most_common(12)},
        # Time inside each function and what it calls; the loop's own frames (~100 %) left out.
        "inclusive": {
            k: round(v / total, 3) for k, v in inclusive.most_common(60) if v / total < 0.9
        },
    }


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['func']} ({_package(match['path'])})"


def summary(profile: dict[str, object], top: int = 5) -> str:
    """``"HTTP server (uvicorn, h11) 30%, ..."`` (or why there is no profile)."""
    packages = profile.get("groups")
    if not isinstance(packages, dict):
        return f"no profile ({profile.get('error', 'py-spy not installed')})"
    return ", ".join(f"{k} {v:.0%}" for k, v in list(packages.items())[:top])
