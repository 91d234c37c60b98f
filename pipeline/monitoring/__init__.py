"""Monitoring, pure: what can be wrong with a tile, and when a mosaic shows it.

- :mod:`~pipeline.monitoring.alarms`: the alarm kinds, a mosaic's holds
  (:class:`AlarmSettings`), the ``alarms=`` language of ``/create`` (:func:`parse_alarms`,
  :class:`AlarmSyntaxError`) and its canonical text for the fingerprint (:func:`canonical`).
- :mod:`~pipeline.monitoring.detect`: the fixed detection levels, cheap picture and audio
  measurements, the per-source condition state machine (:class:`ConditionDetector`) and the
  per-mosaic alarm rule (:class:`Derived`).

No I/O: values in, values out.
"""

from __future__ import annotations

from pipeline.monitoring.alarms import (
    DEFAULT_HOLDS,
    AlarmKind,
    AlarmSettings,
    AlarmSyntaxError,
    canonical,
    parse_alarms,
)
from pipeline.monitoring.detect import (
    ConditionDetector,
    Derived,
    Ended,
    Started,
    Transition,
)

__all__ = [
    "DEFAULT_HOLDS",
    "AlarmKind",
    "AlarmSettings",
    "AlarmSyntaxError",
    "ConditionDetector",
    "Derived",
    "Ended",
    "Started",
    "Transition",
    "canonical",
    "parse_alarms",
]
