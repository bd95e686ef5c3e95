"""The bot's turn end: Pipecat's ``SpeechTimeoutUserTurnStopStrategy`` (VAD stop + finalized
transcript + ``user_speech_timeout``) that also knows the caller's pause.

Vosk is finalized at the caller's pause (``vad.pause_secs`` of silence, before the VAD's stop), so
the turn's transcript is usually finalized before the stop comes and the turn ends on the stop
itself. A caller who speaks again before the stop makes that final a first part, not the turn's
transcript: Pipecat's VAD sends no start for speech before its stop, so ``UserResumedFrame`` voids
what a start would have voided, and the turn waits for the rest's final.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

from ivrbot.pause_signal import UserResumedFrame


class PauseAwareTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):  # type: ignore[no-untyped-call]
    """A resume before the VAD's stop un-finalizes the turn's transcript so far."""

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, UserResumedFrame):
            await self._discard_pending_end_of_turn()  # type: ignore[no-untyped-call]
        result: ProcessFrameResult = await super().process_frame(frame)
        return result
