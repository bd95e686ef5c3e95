"""Prefill llama-server's KV cache with the caller's transcript while the caller is still speaking.

The reply's time to first token is mostly the evaluation of the prompt tokens the slot has not
cached: with the system prompt, greeting and history cached, that is the caller's new transcript
(Korean is 28-49 tokens for SmolLM2's tokenizer). Vosk's partials arrive while the caller speaks, and
the final transcript is usually the last partial plus the last word. So while the VAD says the
caller speaks, each grown partial is sent as the request the turn's reply will begin with (the
call's context as the LLM service sends it, plus a user message with the turn's finals and the
latest partial joined as the user aggregator joins them), generating one token. llama-server puts
that prompt in the slot whose cached prompt shares the longest prefix with it, and the real request
then lands on that slot by the same rule and evaluates only what the partial did not have.

``PrefillPlan`` decides (no I/O); ``LLMPrefill`` is the frame processor between the STT and the
user aggregator that feeds it frames and runs the requests. Rules:

- at most one prefill in flight per call; a newer transcript meanwhile is remembered and only the
  latest is sent when the one in flight ends;
- a transcript is sent only when it has at least ``min_growth`` characters beyond its common prefix
  with the last transcript prefilled: a Vosk partial grows a word at a time (a space and at least one
  syllable), and a repeat or a one-character change is not worth a request;
- nothing is sent between a VAD stop and the next VAD start (the real request is coming and must
  not wait behind a prefill for the llama slot); the one in flight is cancelled at the stop;
- the caller's pause (``vad.pause_secs``, before the stop) finalizes Vosk, and that final is sent:
  it is the whole question when the caller says no more, so the request at the stop finds even the
  last word cached. With preemptive replies on, the real request starts on that final instead, so
  the pause is treated as the stop (``stop_at_pause``).
  Cancelling closes the connection, but llama-server evaluates the prompt it already started
  (one decode call) and keeps the slot until then: measured in docs/pipeline.md.

A prefill is an optimisation: a failure is counted and logged (the first of a call as a warning,
the rest at debug level), never raised into the pipeline, and every frame passes at once, unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.string import TextPartForConcatenation, concatenate_aggregated_text

from ivrbot.logs import get_logger
from ivrbot.pause_signal import UserPausedFrame, UserResumedFrame
from ivrbot.services.llama_llm import PromptUsage

log = get_logger(__name__)


class PrefillTarget(Protocol):
    """What evaluates a context into the LLM's cache (``LlamaLLMService.prefill``)."""

    async def prefill(self, context: LLMContext) -> PromptUsage: ...


@dataclass
class PrefillPlan:
    """When to prefill, and with what text: the caller's state in, "send this transcript" out."""

    min_growth: int = 3
    speaking: bool = False
    #: the transcript of the prefill in flight, or None
    in_flight: str | None = None
    #: the transcript the last completed prefill put in the cache
    covered: str = ""
    _finals: list[TextPartForConcatenation] = field(default_factory=list)
    _partial: TextPartForConcatenation | None = None
    _waiting: bool = False

    def __post_init__(self) -> None:
        if self.min_growth < 1:
            raise ValueError(f"min_growth must be at least 1, got {self.min_growth}")

    def transcript(self) -> str:
        """The turn's finals so far and the latest partial, joined as Pipecat's user aggregator joins finals."""
        parts = [*self._finals, *([self._partial] if self._partial is not None else [])]
        return concatenate_aggregated_text(parts)

    def vad_started(self) -> str | None:
        self.speaking = True
        return self._next()

    def vad_stopped(self) -> bool:
        """The caller paused; returns whether a prefill is in flight (to cancel)."""
        self.speaking = False
        self._waiting = False
        return self.in_flight is not None

    def partial(self, text: str, includes_spaces: bool = False) -> str | None:
        self._partial = TextPartForConcatenation(text, includes_inter_part_spaces=includes_spaces)
        return self._next()

    def final(self, text: str, includes_spaces: bool = False) -> str | None:
        if text.strip():  # the aggregator skips empty finals
            self._finals.append(TextPartForConcatenation(text, includes_inter_part_spaces=includes_spaces))
        self._partial = None
        return self._next()

    def turn_ended(self) -> None:
        """The aggregator wrote the turn to the context: the next transcript starts empty."""
        self._finals.clear()
        self._partial = None
        self.covered = ""

    def done(self, ok: bool) -> str | None:
        """The prefill in flight ended (``ok``: llama-server answered); returns what to send next, if anything."""
        if ok and self.in_flight is not None:
            self.covered = self.in_flight
        self.in_flight = None
        if not self._waiting:
            return None
        self._waiting = False
        return self._next()

    def _next(self) -> str | None:
        if not self.speaking:
            return None
        text = self.transcript()
        if not text or self._new_chars(text) < self.min_growth:
            return None
        if self.in_flight is not None:
            self._waiting = text != self.in_flight
            return None
        self.in_flight = text
        return text

    def _new_chars(self, text: str) -> int:
        shared = 0
        for a, b in zip(text, self.covered, strict=False):
            if a != b:
                break
            shared += 1
        return len(text) - shared


class LLMPrefill(FrameProcessor):
    """Between the STT and the user aggregator: passes every frame on, and prefills the LLM (see module doc)."""

    def __init__(
        self,
        llm: PrefillTarget,
        context: LLMContext,
        *,
        call_id: str = "",
        min_growth: int = 3,
        stop_at_pause: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._stop_at_pause = stop_at_pause
        self._llm = llm
        self._context = context
        self.plan = PrefillPlan(min_growth=min_growth)
        self._task: asyncio.Task[bool] | None = None
        self._log = log.bind(call_id=call_id)
        #: prefills started, answered, cancelled and failed over the call
        self.sent = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        #: llama-server's answer to the last completed prefill
        self.last_usage: PromptUsage | None = None
        self._segment_sent = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        # the VAD frames come upstream from the aggregator, transcripts downstream from the STT
        if isinstance(frame, (VADUserStartedSpeakingFrame, UserResumedFrame)):
            self._send(self.plan.vad_started())
        elif isinstance(frame, VADUserStoppedSpeakingFrame) or (
                isinstance(frame, UserPausedFrame) and self._stop_at_pause):
            self._stop()
        elif isinstance(frame, InterimTranscriptionFrame):
            self._send(self.plan.partial(frame.text, frame.includes_inter_frame_spaces))
        elif isinstance(frame, TranscriptionFrame):
            self._send(self.plan.final(frame.text, frame.includes_inter_frame_spaces))
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self.plan.turn_ended()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self._stop()

    def _send(self, text: str | None) -> None:
        if text is None:
            return
        messages: list[LLMContextMessage] = [*self._context.messages, {"role": "user", "content": text}]
        context = LLMContext(messages=messages, tools=self._context.tools, tool_choice=self._context.tool_choice)
        self.sent += 1
        self._segment_sent += 1
        task = asyncio.get_running_loop().create_task(self._prefill(context), name=f"{self}::prefill")
        task.add_done_callback(self._ended)
        self._task = task

    async def _prefill(self, context: LLMContext) -> bool:
        try:
            usage = await self._llm.prefill(context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an optimisation: nothing of it may reach the call
            self.failed += 1
            level = self._log.warning if self.failed == 1 else self._log.debug
            level("llm prefill failed", error=repr(exc), failures=self.failed)
            return False
        self.completed += 1
        self.last_usage = usage
        self._log.debug("llm prefilled", prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens)
        return True

    def _ended(self, task: asyncio.Task[bool]) -> None:
        if task.cancelled():
            self.cancelled += 1
        ok = not task.cancelled() and task.result()
        if task is self._task:
            self._task = None
            self._send(self.plan.done(ok))

    def _stop(self) -> None:
        in_flight = self.plan.vad_stopped()
        if self._segment_sent:
            usage = self.last_usage
            self._log.info(
                "llm prefill stopped",
                sent=self._segment_sent,
                in_flight_cancelled=in_flight,
                covered_chars=len(self.plan.covered),
                covered=self.plan.covered,
                prompt_tokens=usage.prompt_tokens if usage else None,
                cached_tokens=usage.cached_tokens if usage else None,
            )
            self._segment_sent = 0
        if in_flight and self._task is not None:
            self._task.cancel()

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        task = self._task
        self.plan.vad_stopped()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
