"""Preemptive replies: answer the caller's pause before the end of the turn is confirmed.

The turn ends (``turn_stop.py``) once the VAD has stopped *and* Vosk's finalized transcript is in.
When the VAD hears a pause (``vad.pause_secs`` of silence, before its ``stop_secs``) the STT
finalizes Vosk there and pushes that final marked ``PAUSE_FINAL``; this starts the LLM earlier
still: on that final, the reply starts on the turn's finals so far, which now end at the pause. A
partial was no basis: Vosk's final nearly always adds the last word its partials lacked
(docs/pipeline.md). It runs through Pipecat 1.14's speculation machinery (the aggregator runs the
inference on a provisional context; nothing is written to the conversation), and the reply's first
clause is synthesized too. What it produces is held behind the TTS until the turn is confirmed:

- confirmed, and the turn's transcript matches the one the reply was started on (``normalize``:
  Unicode NFKC, case, punctuation, whitespace), which it does when the caller stayed silent from the
  pause to the stop (the stop's finalize then answers an empty segment): the held audio plays at
  once, no second inference;
- confirmed with a different transcript: the speculative reply is withdrawn
  (``EagerEndOfTurnCancelFrame``: the LLM closes its stream, which makes llama-server stop the slot;
  Piper cancels the sentences; the held frames are dropped) and the final is answered as usual;
- the caller speaks again before the confirmation (``UserResumedFrame`` before the VAD's stop, a
  VAD start after it): withdrawn the same way, nothing of it is ever played, and the next pause may
  start a new one on the longer transcript.

Pipecat holds a speculative reply inside the LLM service, before the TTS; ``PreemptiveLLMGate``
moves that hold to ``SpeculativeReplyGate`` after the TTS, so the synthesis is done ahead too.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.speculation_gate import GatedFrame, SpeculationGate
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation

from ivrbot.logs import get_logger
from ivrbot.pause_signal import UserResumedFrame
from ivrbot.services.vosk_stt import PAUSE_FINAL
from ivrbot.turn_stop import PauseAwareTurnStopStrategy

#: set on a speculative reply's ``LLMFullResponseStartFrame`` by the LLM, read by the gate after the TTS
SPECULATIVE = "ivrbot_speculative"

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """What two transcripts must share to count as the same question."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def transcripts_match(used: str, final: str) -> bool:
    return normalize(used) == normalize(final)


class PreemptiveTurnStopStrategy(PauseAwareTurnStopStrategy):
    """The bot's turn end (``turn_stop.py``), with a speculative reply started at the caller's
    pause on the turn's finals up to it."""

    def __init__(self, *, call_id: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._finals: list[str] = []  # the turn's transcriptions, in order
        self._speculation: UserTurnSpeculation | None = None
        self._log = get_logger(__name__).bind(call_id=call_id)
        #: counters: started, played (matched), withdrawn because the final differed / the caller resumed,
        #: pause finals that came after the VAD's stop (Vosk behind: nothing to win)
        self.started = 0
        self.late = 0
        self.matched = 0
        self.mismatched = 0
        self.resumed = 0

    @property
    def pending(self) -> UserTurnSpeculation | None:
        return self._speculation

    @property
    def transcript(self) -> str:
        """The turn's transcript as the user aggregator joins it."""
        return " ".join(self._finals)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, (VADUserStartedSpeakingFrame, UserResumedFrame)):
            if self._speculation is not None:
                self.resumed += 1
                await self._withdraw("caller resumed")
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._finals.append(frame.text.strip())
        result = await super().process_frame(frame)
        if isinstance(frame, TranscriptionFrame) and isinstance(frame.result, dict) and frame.result.get(PAUSE_FINAL):
            # Still in the pause: after the VAD's stop the turn is about to end anyway.
            if self._vad_user_speaking and not self._vad_stopped:
                await self._speculate()
            else:
                self.late += 1
                self._log.info("pause final after the VAD stop: no preemptive reply")
        return result

    async def _speculate(self) -> None:
        if self._speculation is not None:
            return  # one at a time
        text = self.transcript
        if not text:
            return
        self._speculation = UserTurnSpeculation(text=text)
        self.started += 1
        self._log.info("preemptive reply started", text=text)
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is None:
            await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)
            return
        if transcripts_match(speculation.text, self.transcript):
            self.matched += 1
            self._log.info("preemptive reply kept", text=self.transcript)
            # The UserStoppedSpeakingFrame this broadcasts releases the held reply.
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames, confirms_speculation=True
            )
            return
        self.mismatched += 1
        self._log.info("preemptive reply withdrawn", used=speculation.text, final=self.transcript)
        await self.trigger_user_turn_speculation_cancelled()  # type: ignore[no-untyped-call]
        await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)

    async def _withdraw(self, why: str) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            self._log.info("preemptive reply withdrawn", reason=why, used=speculation.text)
            await self.trigger_user_turn_speculation_cancelled()  # type: ignore[no-untyped-call]

    async def _reset(self, *, clear_vad_user_speaking: bool) -> None:
        self._finals = []
        await super()._reset(clear_vad_user_speaking=clear_vad_user_speaking)
        # A turn boundary with a speculation unresolved (a watchdog, an interruption): void it.
        await self._withdraw("turn ended unresolved")


class PreemptiveLLMGate(SpeculationGate):
    """Replaces the LLM service's gate: tracks whether the inference is speculative (so a
    withdrawal still stops it) but lets every frame through, marking a speculative reply's start
    for ``SpeculativeReplyGate``."""

    def process(self, frame: Frame, direction: FrameDirection) -> list[GatedFrame]:
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, LLMFullResponseStartFrame) and self._speculating:
                frame.metadata[SPECULATIVE] = True
            elif isinstance(frame, (EagerEndOfTurnCancelFrame, InterruptionFrame)):
                self._speculating = False
            elif isinstance(frame, UserStoppedSpeakingFrame):
                self._turn_ended = True
                self._speculating = False
            elif isinstance(frame, UserStartedSpeakingFrame):
                self._turn_ended = False
        return [(frame, direction)]


class SpeculativeReplyGate(FrameProcessor):
    """After the TTS: holds a speculative reply (text and audio) until its turn is confirmed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = SpeculationGate(name="speculative-reply-gate")

    def route(self, frame: Frame, direction: FrameDirection) -> list[GatedFrame]:
        """What passing ``frame`` releases, in order (synchronous: no other task can interleave)."""
        if isinstance(frame, LLMFullResponseStartFrame) and frame.metadata.get(SPECULATIVE):
            self.gate.begin_speculation(True)
        return self.gate.process(frame, direction)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        for out, out_direction in self.route(frame, direction):
            await self.push_frame(out, out_direction)
