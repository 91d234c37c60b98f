"""Test sources live in :mod:`pipeline.synthetic` (``tessera demo`` uses them too)."""

from pipeline.synthetic import *  # noqa: F403
