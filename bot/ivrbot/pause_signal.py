"""The caller's pause inside a turn: shorter than the VAD's stop, long enough to act on.

``InlineSileroVADAnalyzer`` notices a pause once ``pause_secs`` of the ``stop_secs`` it waits before
calling a stop have passed, and a resume when the caller speaks again before the stop. Pipecat's
VAD controller only reports stops and starts, so these travel as frames of their own, sent the way
the user aggregator sends its VAD frames: upstream to the STT (which finalizes Vosk on a pause) and
through the aggregator's own queue to its turn strategies (a resume voids what the pause started).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

#: called by the analyzer with True on a pause, False when the caller resumes before the VAD's stop
PauseCallback = Callable[[bool], Awaitable[None]]


@dataclass
class UserPausedFrame(SystemFrame):
    """The caller has been silent for ``pause_secs`` while the VAD waits for its stop."""


@dataclass
class UserResumedFrame(SystemFrame):
    """The caller spoke again after a ``UserPausedFrame``, before the VAD's stop."""


def pause_forwarder(aggregator: FrameProcessor) -> PauseCallback:
    """The analyzer's callback for the user aggregator that runs it (Pipecat's ``_queued_broadcast_frame``)."""

    async def forward(paused: bool) -> None:
        cls = UserPausedFrame if paused else UserResumedFrame
        await aggregator.queue_frame(cls())
        await aggregator.push_frame(cls(), FrameDirection.UPSTREAM)

    return forward
