"""The observer inside a real Pipecat 1.14 PipelineWorker, with Pipecat's own tracing on.

Frames are queued into a running pipeline as the services would push them; the spans are
received by the session's real OTLP endpoint (the process-wide provider Pipecat traces into).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from ivrbot.assistant import user_turns
from ivrbot.assistant_settings import AssistantSettings
from ivrbot.metrics import Metrics
from ivrbot.pause_signal import UserPausedFrame, pause_forwarder
from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.clock import BotClock
from ivrbot.telemetry.observer import CallTraceObserver, worker_tracing_kwargs
from ivrbot.telemetry.setup import Tracing
from ivrbot.telemetry.timeline import LLM_FIRST_TOKEN, TTS_FIRST_AUDIO, VAD_STOP
from ivrbot.turn_stop import PauseAwareTurnStopStrategy
from ivrbot.vad import make_vad
from ivrbot_tools.demo import trim_silence
from ivrbot_tools.speech_samples import caller_speech, silence

from .otlp_receiver import OtlpReceiver, children


class PassThrough(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


async def until(predicate: object, what: str) -> None:
    assert callable(predicate)
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


@asynccontextmanager
async def started(
    worker: PipelineWorker, create_task: Callable[..., asyncio.Task[None]]
) -> AsyncIterator[asyncio.Task[None]]:
    """The worker running (``create_task`` decides its context), once its pipeline has started; cancelled
    on the way out unless the test ended it."""
    up = asyncio.Event()

    async def _started(w: PipelineWorker, frame: Frame) -> None:
        up.set()

    worker.add_event_handler("on_pipeline_started", _started)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = create_task(runner.run())
    try:
        await asyncio.wait_for(up.wait(), 30)
        yield run
    finally:
        if not run.done():
            await worker.cancel()
            await asyncio.gather(run, return_exceptions=True)


async def test_observer_marks_stages_and_pipecat_spans_join_the_call(
    global_tracing: Tracing, session_otlp_receiver: OtlpReceiver
) -> None:
    call_id = "obs-1@test"
    metrics = Metrics()
    ct = CallTrace(call_id, tracer=global_tracing.tracer(), metrics=metrics, remote=("127.0.0.1", 5062))
    ct.answered()
    clock = BotClock()
    worker = PipelineWorker(
        Pipeline([PassThrough()]),
        params=PipelineParams(),
        enable_rtvi=False,
        idle_timeout_secs=None,
        clock=clock,
        observers=[CallTraceObserver(ct, clock)],
        **worker_tracing_kwargs(call_id, tracing_enabled=global_tracing.enabled),
    )
    async with started(worker, ct.create_task) as run:
        # Greeting: audio with no turn open is not a turn.
        await worker.queue_frames([TTSAudioRawFrame(b"\0\0" * 160, 16000, 1), BotStartedSpeakingFrame()])
        await worker.queue_frames([BotStoppedSpeakingFrame()])
        await worker.queue_frames(
            [
                VADUserStartedSpeakingFrame(),
                UserStartedSpeakingFrame(),
                InterimTranscriptionFrame("hel", "caller", "t0"),
                VADUserStoppedSpeakingFrame(stop_secs=0.3),
                TranscriptionFrame("hello there", "caller", "t1"),
                UserStoppedSpeakingFrame(),
                LLMTextFrame("Hi"),
                LLMTextFrame(" there"),
                TTSAudioRawFrame(b"\0\0" * 160, 16000, 1),
                TTSAudioRawFrame(b"\0\0" * 160, 16000, 1),
                BotStartedSpeakingFrame(),
            ]
        )
        await until(lambda: ct.current_turn is not None and ct.current_turn.has(TTS_FIRST_AUDIO), "tts marked")
        turn = ct.current_turn
        assert turn is not None and turn.number == 1
        # Moments come from the frames' push times on the pipeline clock, in pipeline order.
        order = list(turn.moments)
        assert order == [VAD_STOP, "stt_final", LLM_FIRST_TOKEN, TTS_FIRST_AUDIO]
        assert all(a <= b for a, b in zip(list(turn.moments.values()), list(turn.moments.values())[1:], strict=False))
        # The RTP sender reports the first reply packet (here: now).
        ct.mark_first_packet_sent()
        assert ct.turns_completed == 1
        await worker.queue_frames([BotStoppedSpeakingFrame(), EndFrame()])
        await asyncio.wait_for(run, 30)
    ct.end("caller_bye")
    assert global_tracing.force_flush(10)

    def complete(spans: list) -> bool:  # type: ignore[type-arg]
        names = {s.name for s in spans if s.trace_id == ct.trace_id}
        return {"call", "conversation", "turn", "stt", "llm", "tts", "rtp.send"} <= names

    session_otlp_receiver.wait_for(complete)
    spans = session_otlp_receiver.trace_of(call_id)
    call = next(s for s in spans if s.name == "call")
    top = children(spans, call)
    conv = next(s for s in top if s.name == "conversation")
    assert conv.attributes["conversation.id"] == call_id
    assert conv.attributes["sip.call_id"] == call_id
    assert conv.scope.startswith("pipecat")
    our_turns = [s for s in top if s.name == "turn"]
    assert len(our_turns) == 1
    assert our_turns[0].attributes["vad.stop_secs"] == 0.3
    assert our_turns[0].attributes["stt.chars"] == len("hello there")
    assert [c.name for c in children(spans, our_turns[0])] == ["stt", "llm", "tts", "rtp.send"]
    # Pipecat's turn spans sit under its conversation, in the same trace.
    assert any(s.name == "turn" for s in children(spans, conv))
    assert metrics.registry.get_sample_value("ivrbot_turn_latency_seconds_count") == 1


class PauseFinalSTT(FrameProcessor):
    """Stands in for the STT as the turn-end path uses it: a finalized transcript at the caller's pause."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.finalized = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserPausedFrame) and not self.finalized.is_set():
            final = TranscriptionFrame(self.text, "caller", "t1")
            final.finalized = True
            await self.push_frame(final)
            self.finalized.set()
        await self.push_frame(frame, direction)


def chunks(pcm: bytes, rate: int = 16000) -> list[Frame]:
    step = 2 * rate // 50
    return [InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=1)
            for i in range(0, len(pcm), step)]


async def test_a_turn_whose_final_came_at_the_pause_is_complete(global_tracing: Tracing) -> None:
    """Vosk's final usually arrives at the caller's pause, before the VAD's stop. The real user
    aggregator (the VAD inside it) sends that stop twice, upstream to the STT and downstream; both
    used to open a turn, the second abandoning the first with the final, so half of all turns had
    no stage times (bench ``stage_sources`` ``none``)."""
    settings = AssistantSettings()
    ct = CallTrace("obs-pause@test", tracer=global_tracing.tracer(), remote=("127.0.0.1", 5062))
    ct.answered()
    clock = BotClock()
    vad = make_vad(settings.vad, settings.audio_in_sample_rate)
    stt = PauseFinalSTT("what are your hours")
    turn_stop = PauseAwareTurnStopStrategy(user_speech_timeout=settings.turn_stop_secs)
    user = LLMContextAggregatorPair(LLMContext(), user_params=user_turns(vad, turn_stop)).user()
    vad.on_pause = pause_forwarder(user)
    turns_ended = asyncio.Event()

    async def ended(*_: object) -> None:
        turns_ended.set()

    user.add_event_handler("on_user_turn_stopped", ended)
    worker = PipelineWorker(
        Pipeline([stt, user, PassThrough()]),
        params=PipelineParams(audio_in_sample_rate=settings.audio_in_sample_rate),
        enable_rtvi=False, idle_timeout_secs=None, clock=clock, observers=[CallTraceObserver(ct, clock)],
    )
    async with started(worker, asyncio.create_task) as run:
        # speech, then silence 20 ms at a time (as a caller sends it) until the pause's final is in
        await worker.queue_frames(chunks(trim_silence(caller_speech("오늘 날씨가 어때요"))))
        for _ in range(25):
            if stt.finalized.is_set():
                break
            await worker.queue_frames(chunks(silence(0.02)))
            await asyncio.sleep(0.02)
        assert stt.finalized.is_set()
        assert ct.current_turn is None  # no stop yet
        await worker.queue_frames(chunks(silence(0.4)))  # the stop
        await asyncio.wait_for(turns_ended.wait(), 30)
        await until(lambda: ct.current_turn is not None, "turn opened")
        await worker.queue_frames([LLMTextFrame("We open"), TTSAudioRawFrame(b"\0\0" * 160, 16000, 1)])
        await until(lambda: ct.current_turn is not None and ct.current_turn.has(TTS_FIRST_AUDIO), "tts marked")
        turn = ct.current_turn
        assert turn is not None and turn.number == 1
        assert turn.moments["stt_final"] == turn.moments[VAD_STOP]  # VAD->STT is 0: the final was in first
        ct.mark_first_packet_sent()
        assert ct.turns_completed == 1
        await worker.queue_frames([EndFrame()])
        await asyncio.wait_for(run, 30)
    ct.end("caller_bye")
