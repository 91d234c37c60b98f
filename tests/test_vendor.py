"""hls.js ships inside the package (``gateway/vendor/hls.js/``), so a pip install alone serves
the mosaic page's player, with no npm. ``package-lock.json`` stays the pin: the copy, its
manifest and the lock file cannot drift apart, and the gateway serves those exact bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway import pages
from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.config.settings import load
from pipeline.runtime.httpserver import HttpServer

ROOT = Path(__file__).resolve().parent.parent
RE_VENDOR = "run `just vendor` (it copies hls.js from npm as package-lock.json pins it)"


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pages.HLS_JS_DIR / "vendored.json").read_text())
    return data


def test_the_packaged_hls_js_is_the_one_package_lock_pins() -> None:
    pin = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/hls.js"]
    wanted = json.loads((ROOT / "package.json").read_text())["dependencies"]["hls.js"]
    assert wanted == pin["version"], (
        f"package.json wants hls.js {wanted}, package-lock.json pins {pin['version']}: "
        f"run `npm install --package-lock-only hls.js@{wanted}`, then `just vendor`"
    )
    copied = manifest()
    assert (copied["version"], copied["integrity"]) == (pin["version"], pin["integrity"]), (
        f"gateway/vendor/hls.js/ holds hls.js {copied['version']}, package-lock.json pins "
        f"{pin['version']}: {RE_VENDOR}"
    )
    on_disk = {p.name for p in pages.HLS_JS_DIR.iterdir()} - {"vendored.json"}
    assert on_disk == set(copied["files"]), f"vendored.json lists {sorted(copied['files'])}"
    for name, entry in copied["files"].items():
        digest = hashlib.sha256((pages.HLS_JS_DIR / name).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"gateway/vendor/hls.js/{name} was changed: {RE_VENDOR}"
    # The bytes name their own version too (hls.js's `Hls.version`), a check that does not
    # trust the manifest.
    assert f'"{pin["version"]}"'.encode() in (pages.HLS_JS_DIR / "hls.min.js").read_bytes()
    assert "Apache License, Version 2.0" in (pages.HLS_JS_DIR / "LICENSE").read_text()
    assert pages.HLS_JS == pages.HlsJs(pin["version"], pages.HLS_JS_DIR / "hls.min.js")


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        GatewayContext(nc=nc, js=js, config=load(env={"TESSERA_DATA_DIR": str(tmp_path)}))
    )
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            yield client
    finally:
        await server.stop()


async def test_the_gateway_serves_the_packaged_hls_js(http: httpx.AsyncClient) -> None:
    copied = manifest()
    versioned = f"/vendor/hls.js/{copied['version']}/hls.min.js"
    # The page asks for /vendor/hls.js, which names no version and so is never cached...
    moved = await http.get("/vendor/hls.js")
    assert moved.status_code == 302 and moved.headers["location"] == versioned
    assert moved.headers["cache-control"] == "no-cache"
    # ...and lands on the version's own URL, cached for good.
    got = await http.get("/vendor/hls.js", follow_redirects=True)
    assert got.status_code == 200 and str(got.url).endswith(versioned)
    assert got.headers["content-type"].startswith("text/javascript")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "max-age=31536000" in got.headers["cache-control"]
    assert "immutable" in got.headers["cache-control"]
    assert hashlib.sha256(got.content).hexdigest() == copied["files"]["hls.min.js"]["sha256"]

    other = await http.get("/vendor/hls.js/0.0.1/hls.min.js")
    assert other.status_code == 404 and other.headers["content-type"].startswith("text/javascript")
    assert f"serves hls.js {copied['version']}, at {versioned}" in other.text


async def test_a_broken_install_says_so(
    http: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pages.read_hls_js(tmp_path) is None
    monkeypatch.setattr(pages, "HLS_JS", None)
    for url in ("/vendor/hls.js", "/vendor/hls.js/1.7.4/hls.min.js"):
        missing = await http.get(url)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/javascript")
        assert missing.text.startswith("/* hls.js is missing from this Tessera install (")
        assert "reinstall Tessera" in missing.text
