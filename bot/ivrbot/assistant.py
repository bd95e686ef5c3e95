"""One call's assistant: the Pipecat pipeline in the user's fixed order, and what keeps it on the line.

``transport.input() -> [DTMF menu] -> stt -> [LLM prefill] -> user aggregator (Silero VAD) -> llm
-> tts -> transport.output() -> assistant aggregator``

The DTMF menu is a pass-through for audio that consumes mapped key presses; the VAD lives in the
user aggregator (Pipecat 1.14), which broadcasts the VAD frames upstream to the STT (finalize
on stop) and interrupts the bot when the caller starts speaking (barge-in).

Failures: every service reports an outage as a non-permanent error; this module answers it by
playing the apology rendered at process start (through the TTS service's direct path, so it plays
with Piper down), at most once per ``apology_every_secs``, logging with the call id. The services
keep retrying; a service marked unusable by Pipecat is made usable again so the next turn retries.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.clocks.base_clock import BaseClock
from pipecat.frames.frames import ErrorFrame, LLMRunFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from ivrbot.apology import ApologyAudio, tone_apology
from ivrbot.assistant_settings import AssistantSettings
from ivrbot.dtmf_menu import CallControl, DTMFMenu
from ivrbot.input_audio_end import InputAudioEnd
from ivrbot.logs import get_logger
from ivrbot.pause_signal import pause_forwarder
from ivrbot.services.llama_llm import LlamaLLMService
from ivrbot.services.llm_prefill import LLMPrefill
from ivrbot.services.piper_tts import PiperTTSService
from ivrbot.services.preemptive import PreemptiveTurnStopStrategy, SpeculativeReplyGate
from ivrbot.services.vosk_stt import VoskSTTService
from ivrbot.telemetry.observer import worker_tracing_kwargs
from ivrbot.turn_stop import PauseAwareTurnStopStrategy
from ivrbot.vad import make_vad


def user_turns(vad: VADAnalyzer, turn_stop: PauseAwareTurnStopStrategy) -> LLMUserAggregatorParams:
    """The user aggregator's VAD and turn strategies: a turn starts on speech or words, ends on ``turn_stop``."""
    return LLMUserAggregatorParams(
        vad_analyzer=vad,
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
            stop=[turn_stop],
        ),
        # A turn with no words (a cough that interrupted the bot) is not a question.
        empty_user_turn=None,
    )


class CallAssistant:
    """Builds and owns one call's pipeline; ``run()`` returns when the call's pipeline has ended."""

    def __init__(
        self,
        transport: BaseTransport,
        settings: AssistantSettings,
        call_control: CallControl,
        *,
        call_id: str = "",
        apology: ApologyAudio | None = None,
        greet_on_start: bool = True,
        apology_every_secs: float = 5.0,
        enable_tracing: bool = False,
        observers: list[Any] | None = None,
        clock: BaseClock | None = None,
    ) -> None:
        self.settings = settings
        self.call_id = call_id
        self.call_control = call_control
        self.apology = apology or tone_apology()
        self.apology_every_secs = apology_every_secs
        self.apologies_played = 0
        self.errors: list[str] = []
        self.hangup_reason: str | None = None
        #: what the caller said and what the bot answered, turn by turn (for logs, demo and tests)
        self.transcripts: list[str] = []
        self.replies: list[str] = []
        self._last_apology = -1e9
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = get_logger(__name__).bind(call_id=call_id)

        # The system prompt travels as the LLM service's system_instruction (Pipecat 1.9+), first and
        # byte-identical in every request; the context holds only the conversation.
        self.context = LLMContext()
        self.stt = VoskSTTService(
            url=settings.vosk_url,
            sample_rate=settings.audio_in_sample_rate,
            stall_timeout=settings.stt_stall_timeout_secs,
            call_id=call_id,
        )
        self.llm = LlamaLLMService(
            base_url=settings.llama_url,
            system_prompt=settings.system_prompt,
            model=settings.llm_model,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            call_id=call_id,
            first_token_timeout=settings.llm_first_token_timeout_secs,
            stall_timeout=settings.llm_stall_timeout_secs,
            preemptive=settings.preemptive_replies,
        )
        #: prefills llama-server's cache with the transcript while the caller speaks (None when off)
        self.prefill = (
            LLMPrefill(self.llm, self.context, call_id=call_id, stop_at_pause=settings.preemptive_replies)
            if settings.llm_prefill
            else None
        )
        self.tts = PiperTTSService(
            url=settings.piper_url,
            sample_rate=settings.tts_sample_rate,
            call_id=call_id,
            first_chunk_secs=settings.tts_first_chunk_secs,
        )
        self.dtmf = DTMFMenu(settings.dtmf_map, self, call_id=call_id)
        self.turn_stop = self._turn_stop_strategy(settings, call_id)
        self.vad = make_vad(settings.vad, settings.audio_in_sample_rate)
        self.aggregators = LLMContextAggregatorPair(self.context, user_params=user_turns(self.vad, self.turn_stop))
        if settings.vad.pause_secs > 0:  # the caller's pause finalizes Vosk (and may start the reply)
            self.vad.on_pause = pause_forwarder(self.aggregators.user())
        #: holds a preemptive reply after the TTS until its turn is confirmed (None when off)
        self.reply_gate = SpeculativeReplyGate() if settings.preemptive_replies else None
        #: input audio ends after the user aggregator (the VAD), its last reader
        self.audio_end = InputAudioEnd()
        self.pipeline = Pipeline(
            [
                transport.input(),
                self.dtmf,
                self.stt,
                *([self.prefill] if self.prefill is not None else []),
                self.aggregators.user(),
                self.audio_end,
                self.llm,
                self.tts,
                *([self.reply_gate] if self.reply_gate is not None else []),
                transport.output(),
                self.aggregators.assistant(),
            ]
        )
        silence = settings.silence_timeout_secs
        self.worker = PipelineWorker(
            self.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=settings.audio_in_sample_rate,
                # The TTS rate: OpenSIPSTransport resamples each 20 ms chunk to 8 kHz itself (with a
                # resampler that answers every chunk), so Pipecat's buffering resampler stays out.
                audio_out_sample_rate=settings.tts_sample_rate,
                enable_metrics=True,
                enable_usage_metrics=True,
            ),
            enable_rtvi=False,
            **worker_tracing_kwargs(call_id, tracing_enabled=enable_tracing),
            idle_timeout_secs=silence if silence > 0 else None,
            cancel_on_idle_timeout=False,
            observers=observers or [],
            clock=clock,
        )
        self._wire(greet_on_start)

    @staticmethod
    def _turn_stop_strategy(settings: AssistantSettings, call_id: str) -> PauseAwareTurnStopStrategy:
        if settings.preemptive_replies:
            return PreemptiveTurnStopStrategy(user_speech_timeout=settings.turn_stop_secs, call_id=call_id)
        return PauseAwareTurnStopStrategy(user_speech_timeout=settings.turn_stop_secs)

    # call control as seen by the DTMF menu: remember why the call ended -------------------------

    async def hangup(self, reason: str) -> None:
        if self.hangup_reason is None:
            self.hangup_reason = reason
            self._log.info("bot hangs up", reason=reason)
            await self.call_control.hangup(reason)

    async def transfer(self, target_uri: str) -> bool:
        self._log.info("transfer", target=target_uri)
        return await self.call_control.transfer(target_uri)

    # wiring ----------------------------------------------------------------------------------

    def _wire(self, greet_on_start: bool) -> None:
        for service in (self.stt, self.llm, self.tts):
            service.add_event_handler("on_error", self._on_service_error)

        async def _started(worker: PipelineWorker, frame: Any) -> None:
            self._log.info("call pipeline started")
            if greet_on_start:
                await self.greet()

        async def _silent(worker: PipelineWorker) -> None:
            self._spawn(self.hangup("silence"))

        async def _finished(worker: PipelineWorker, frame: Any) -> None:
            self._log.info("call pipeline finished", frame=type(frame).__name__)

        async def _turn(aggregator: Any, strategy: Any, message: Any) -> None:
            text = getattr(message, "content", None) or ""
            self.transcripts.append(text)
            self._log.info("caller said", text=text)
            if is_hangup_phrase(text, self.settings.hangup_phrases):
                self._spawn(self.hangup("phrase"))

        async def _reply(aggregator: Any, message: Any) -> None:
            text = getattr(message, "content", None) or ""
            self.replies.append(text)
            self._log.info("bot said", text=text, interrupted=getattr(message, "interrupted", None))

        self.worker.add_event_handler("on_pipeline_started", _started)
        self.worker.add_event_handler("on_idle_timeout", _silent)
        self.worker.add_event_handler("on_pipeline_finished", _finished)
        self.aggregators.user().add_event_handler("on_user_turn_stopped", _turn)
        self.aggregators.assistant().add_event_handler("on_assistant_turn_stopped", _reply)

    async def greet(self) -> None:
        """Speak the configured greeting (added to the context, so the prefix stays the same per call)."""
        if self.settings.greeting:
            await self.worker.queue_frame(TTSSpeakFrame(self.settings.greeting, append_to_context=True))

    async def say_as_caller(self, text: str) -> None:
        """Run a turn as if the caller had said ``text`` (tests, DTMF 'say')."""
        self.context.add_message({"role": "user", "content": text})
        await self.worker.queue_frame(LLMRunFrame())

    async def _on_service_error(self, processor: FrameProcessor, error: ErrorFrame) -> None:
        self.errors.append(f"{processor.name}: {error.error}")
        self._log.warning("sidecar failure", service=processor.name, error=error.error)
        if not processor.is_usable:
            # Pipecat stops giving work to a service it wrote off; a sidecar can come back.
            self._spawn(self._revive(processor))
        now = time.monotonic()
        if now - self._last_apology >= self.apology_every_secs:
            self._last_apology = now
            self._spawn(self._play_apology())

    async def _revive(self, processor: FrameProcessor) -> None:
        await asyncio.sleep(1.0)
        await processor.set_usable(True)

    async def _play_apology(self) -> None:
        self.apologies_played += 1
        self._log.info("playing apology", seconds=round(self.apology.seconds, 2))
        await self.tts.play_audio(self.apology.audio, self.apology.sample_rate)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the pipeline until it ends (by itself, or after ``stop()``); a ``CallPipeline``."""
        from pipecat.workers.runner import WorkerRunner

        runner = WorkerRunner(handle_sigint=False)
        try:
            await runner.add_workers(self.worker)
            await runner.run()
        finally:
            await self._stop_helpers()

    async def stop(self) -> None:
        """End the call's pipeline now (safe before ``run()`` and after), and the helper tasks with it."""
        try:
            await self.worker.cancel()
        finally:
            await self._stop_helpers()

    async def _stop_helpers(self) -> None:
        """Cancel helper tasks (apology, hang-up) this assistant started."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def is_hangup_phrase(text: str, phrases: tuple[str, ...]) -> bool:
    """Whether the caller's final transcript contains one of the configured hang-up phrases."""
    folded = " ".join(text.casefold().split())
    return any(p.casefold() in folded for p in phrases if p.strip())

