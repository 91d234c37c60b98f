"""The docs say what the code does: settings table and event catalogue are checked here."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config.settings import markdown_table
from pipeline.messages.events import EVENT_TYPES
from pipeline.nats.topology import BUCKETS, STREAMS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_operations_settings_table_is_the_code() -> None:
    text = (DOCS / "operations.md").read_text()
    match = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert match, "docs/operations.md lost its settings markers"
    assert match.group(1) == markdown_table(), "run `tessera config --markdown` into the docs"


def test_event_catalogue_names_every_event_stream_and_bucket() -> None:
    text = (DOCS / "events.md").read_text()
    for cls in EVENT_TYPES:
        tag = cls.__struct_config__.tag
        assert f"`{cls.__name__}` (`{tag}`)" in text, f"{cls.__name__} missing from events.md"
    for stream in STREAMS:
        assert f"`{stream.name}`" in text
    for bucket in BUCKETS:
        assert f"`{bucket.name}`" in text
