"""How long a step forward waits for its exact picture before the seek proxy's is sent.

Pure: the player tells :class:`StepGrace` how long each step forward waited for an exact
picture that was neither cached nor decoded yet, and asks it how long the next one may wait.

A step at 1080p decodes one frame in ~20 ms: waiting :data:`PROXY_GRACE` for it shows the exact
picture once, not the proxy's and then the exact one. At UHD one frame takes 75 ms and more,
so the wait only delays the proxy's picture. With frame threads the waits alternate: the
decoder hands over two frames at a time, so every other step finds its frame almost ready
(5 ms) and the next one waits the whole decode (95 ms; bench case 12). Judging by the last
step alone therefore waited on every other one. A step is judged slow when one of the last
:data:`RECENT` waited more than :data:`SLOW`; a step whose exact picture comes first is still
sent alone (the player races the two).
"""

from __future__ import annotations

from collections import deque

PROXY_GRACE = 0.025
"""Seconds an exact picture that is not cached has before the seek proxy's picture of its
frame is sent first: a step forward at 1080p (~20 ms) is shown exact, once; a seek or a step
onto a keyframe shows the proxy's."""
SLOW = 2 * PROXY_GRACE
"""A step that waited longer than this was slow: the decoder is no 1080p one-frame decode
(20-25 ms on this machine's cores), so the next steps send the proxy's picture at once."""
RECENT = 4
"""Steps remembered: with frame threads every other step is quick, so one slow step in the
last few says what the decoder is."""


class StepGrace:
    """The grace of the next step forward, from the waits of the last few."""

    def __init__(self) -> None:
        self._waits: deque[float] = deque(maxlen=RECENT)

    def waited(self, seconds: float) -> None:
        """A step forward waited ``seconds`` for its exact picture."""
        self._waits.append(seconds)

    @property
    def grace(self) -> float:
        """Seconds the next uncached exact picture may take before the proxy's goes out."""
        return 0.0 if any(w > SLOW for w in self._waits) else PROXY_GRACE
