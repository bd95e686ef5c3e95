"""Pipecat observer that turns pipeline frames into the stage moments of a ``CallTrace``.

Frame -> moment (first push of each frame only; broadcast twins counted once; the VAD frames only
downstream, because the user aggregator sends each as two separate frames, one pushed upstream to
the STT and one queued through its own turn strategies and on down, with nothing that pairs them):

- ``VADUserStartedSpeakingFrame``  -> ``user_started_speaking`` (abandons a turn still waiting)
- ``VADUserStoppedSpeakingFrame``  -> ``user_stopped_speaking`` (a turn opens; carries stop_secs)
- ``TranscriptionFrame`` (final)   -> ``transcript_final``
- ``LLMTextFrame``                 -> ``llm_first_token``
- ``TTSAudioRawFrame``             -> ``tts_first_audio``
- ``BotStartedSpeakingFrame``      -> ``bot_started_speaking``

The turn ends at the first reply RTP packet, which no frame shows: the RTP sender reports it
through ``CallTrace.mark_first_packet_sent``.

Coexistence with Pipecat's tracing: Pipecat's ``conversation`` span is started without an
explicit parent, so when the worker runs in ``CallTrace.create_task`` it becomes a child of
``call``; ``worker_tracing_kwargs`` gives it the Call-ID (``conversation.id`` and ``sip.call_id``).
Its turn/stt/llm/tts spans (service details, TTFB, model) then sit in the same trace as ours
(stage latencies, budgets, SIP, RTP).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    Frame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.clock import BotClock

_WATCHED = (
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
    TranscriptionFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    BotStartedSpeakingFrame,
)


_VAD = (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)


class CallTraceObserver(BaseObserver):
    """Feeds one call's ``CallTrace`` from the frames of that call's pipeline."""

    def __init__(self, call_trace: CallTrace, clock: BotClock | None = None, **kwargs: Any) -> None:
        super().__init__(observe_every_push=False, **kwargs)
        self._trace = call_trace
        self._clock = clock
        self._seen: deque[int] = deque(maxlen=64)

    def _when(self, data: FramePushed) -> float:
        """The push moment on the monotonic clock (the observer itself runs a little later)."""
        clock = self._clock
        if clock is not None and clock.started and data.timestamp > 0:
            return clock.to_monotonic(data.timestamp)
        return time.monotonic()

    def _first_of_twins(self, frame: Frame) -> bool:
        sibling = frame.broadcast_sibling_id
        if sibling is not None and sibling in self._seen:
            return False
        self._seen.append(frame.id)
        return True

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if not isinstance(frame, _WATCHED) or not self._first_of_twins(frame):
            return
        if isinstance(frame, _VAD) and data.direction is not FrameDirection.DOWNSTREAM:
            return  # the upstream copy: a second stop would abandon the turn the first one opened
        t = self._when(data)
        ct = self._trace
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            ct.user_stopped_speaking(t, stop_secs=frame.stop_secs or None)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            ct.user_started_speaking(t)
        elif isinstance(frame, TranscriptionFrame):
            if frame.text.strip():
                ct.transcript_final(t, chars=len(frame.text))
        elif isinstance(frame, LLMTextFrame):
            ct.llm_first_token(t)
        elif isinstance(frame, TTSAudioRawFrame):
            ct.tts_first_audio(t)
        elif isinstance(frame, BotStartedSpeakingFrame):
            ct.bot_started_speaking(t)


def worker_tracing_kwargs(call_id: str, *, tracing_enabled: bool) -> dict[str, Any]:
    """Keyword arguments for ``PipelineWorker`` tying Pipecat's spans to the call (``CallAssistant`` uses them).

    Run the worker inside ``CallTrace.create_task(...)`` so its ``conversation`` span is a child of ``call``.
    """
    return {
        "enable_tracing": tracing_enabled,
        "enable_turn_tracking": True,
        "conversation_id": call_id or None,
        "additional_span_attributes": {"sip.call_id": call_id} if call_id else {},
    }
