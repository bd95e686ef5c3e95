"""A Pipecat clock whose readings can be put back on ``time.monotonic()``.

Pipecat stamps every pushed frame with its pipeline clock (nanoseconds since the clock
started). Pipecat's ``SystemClock`` keeps its origin private; this one publishes it, so the
trace observer turns a frame's push time into the bot's monotonic clock exactly, instead of
reading the clock when its queued observer task gets round to the frame.
"""

from __future__ import annotations

import time

from pipecat.clocks.base_clock import BaseClock


class BotClock(BaseClock):
    """Same behaviour as Pipecat's SystemClock, plus ``to_monotonic``."""

    def __init__(self) -> None:
        self.origin_ns = 0

    def get_time(self) -> int:
        return time.monotonic_ns() - self.origin_ns if self.origin_ns > 0 else 0

    def start(self) -> None:
        self.origin_ns = time.monotonic_ns()

    @property
    def started(self) -> bool:
        return self.origin_ns > 0

    def to_monotonic(self, pipeline_ns: int) -> float:
        """Seconds on ``time.monotonic()`` for a pipeline timestamp."""
        return (self.origin_ns + pipeline_ns) / 1e9
