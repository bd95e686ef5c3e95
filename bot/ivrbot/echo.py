"""Test-only echo pipeline: the caller hears their own audio back through the full media path.

Used by ``ivrbot serve --echo`` (as :class:`EchoPipeline`) and the media round-trip tests: RTP in ->
jitter buffer -> 16 kHz input frames -> (this processor turns them into output frames) -> 8 kHz PCMU
paced sender.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ivrbot.transport import OpenSIPSTransport

ECHO_SAMPLE_RATE = 16000


class AudioEcho(FrameProcessor):
    """Turns each caller audio frame into bot output audio (DTMF and other frames pass through)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels)
            )
        else:
            await self.push_frame(frame, direction)


def build_echo_worker(
    transport: OpenSIPSTransport,
    *,
    sample_rate: int = ECHO_SAMPLE_RATE,
    observers: Sequence[FrameProcessor] = (),
) -> PipelineWorker:
    """A PipelineWorker echoing the call (``observers`` sit right after the input, e.g. to see DTMF)."""
    pipeline = Pipeline([transport.input(), *observers, AudioEcho(), transport.output()])
    return PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=sample_rate, audio_out_sample_rate=sample_rate),
        enable_rtvi=False,
        idle_timeout_secs=None,
        cancel_on_idle_timeout=False,
    )


class EchoPipeline:
    """The echo as a call pipeline (``ivrbot.call_pipeline.CallPipeline``), for ``ivrbot serve --echo``."""

    def __init__(self, transport: OpenSIPSTransport) -> None:
        self.worker = build_echo_worker(transport)

    async def run(self) -> None:
        from pipecat.workers.runner import WorkerRunner

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        await runner.run()

    async def stop(self) -> None:
        await self.worker.cancel()
