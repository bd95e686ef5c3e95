"""The observer inside a real Pipecat 1.14 PipelineWorker, with Pipecat's own tracing on.

Frames are queued into a running pipeline as the services would push them; the spans are
received by the session's real OTLP endpoint (the process-wide provider Pipecat traces into).
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
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
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from ivrbot.metrics import Metrics
from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.clock import BotClock
from ivrbot.telemetry.observer import CallTraceObserver, worker_tracing_kwargs
from ivrbot.telemetry.setup import Tracing
from ivrbot.telemetry.timeline import LLM_FIRST_TOKEN, TTS_FIRST_AUDIO, VAD_STOP

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
    started = asyncio.Event()

    async def _started(w: PipelineWorker, frame: Frame) -> None:
        started.set()

    worker.add_event_handler("on_pipeline_started", _started)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = ct.create_task(runner.run(), name="pipeline")
    try:
        await asyncio.wait_for(started.wait(), 30)
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
    finally:
        if not run.done():
            await worker.cancel()
            await asyncio.gather(run, return_exceptions=True)
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
