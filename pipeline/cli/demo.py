"""``tessera demo``: ``tessera up`` plus a few synthetic live HLS cameras on loopback, and a
``/create`` link that shows them, so a new user sees a real mosaic in a minute with nothing
else installed."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from pipeline.cli.up import Stack
from pipeline.config.settings import Config
from pipeline.errors import ConfigError
from pipeline.sources.synthetic import LiveHlsSource, SourceServer

PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Lobby", (200, 40, 40)),
    ("Loading-Dock", (40, 170, 60)),
    ("Car-Park", (40, 70, 200)),
    ("Server-Room", (210, 190, 40)),
    ("Roof", (150, 60, 180)),
    ("Gate", (40, 180, 180)),
    ("Stairs", (220, 120, 40)),
    ("Corridor", (120, 120, 120)),
    ("Reception", (230, 230, 230)),
)


class Demo:
    """A :class:`Stack` and a :class:`SourceServer` with ``count`` cameras."""

    def __init__(self, config: Config, count: int = 4) -> None:
        if config.public:
            raise ConfigError(
                "tessera demo serves its cameras on loopback, which --public refuses: "
                "run it without --public"
            )
        if not 1 <= count <= len(PALETTE):
            raise ConfigError(f"--sources={count}: from 1 to {len(PALETTE)}")
        self.stack = Stack(config)
        self.sources = SourceServer(
            {name: LiveHlsSource(rgb, width=640, height=360) for name, rgb in PALETTE[:count]}
        )
        self.count = count

    @property
    def create_url(self) -> str:
        """The /create link that shows every demo camera."""
        assert self.stack.gateway is not None
        names = ",".join(name for name, _ in PALETTE[: self.count])
        pattern = f"http://127.0.0.1:{self.sources.port}/{{{names}}}[n]/index.m3u8"
        query = urlencode({"urls": pattern, "title": "Tessera demo"})
        return f"{self.stack.gateway.url}/create?{query}"

    async def start(self) -> None:
        """Start the cameras (in threads), then the stack."""
        await asyncio.to_thread(self.sources.start)
        try:
            await self.stack.start()
        except BaseException:
            await asyncio.to_thread(self.sources.stop)
            raise

    async def stop(self) -> None:
        """Stop the stack, then the cameras. Safe twice."""
        await self.stack.stop()
        await asyncio.to_thread(self.sources.stop)
