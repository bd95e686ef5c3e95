"""Run one Pipecat processor in a real PipelineWorker and record every frame that leaves it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import Frame, StartFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner


class Recorder(FrameProcessor):
    """Passes frames through and remembers those moving in ``direction``."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction and not isinstance(frame, StartFrame):
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    def of(self, cls: type[Any] | tuple[type[Any], ...]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, cls)]


class Harness:
    """``async with Harness(service) as h``: h.send(frames), h.wait_for(pred), h.down / h.up recorders."""

    def __init__(self, processor: FrameProcessor, *, audio_in: int = 16000, audio_out: int = 22050) -> None:
        self.processor = processor
        self.up = Recorder(FrameDirection.UPSTREAM)
        self.down = Recorder(FrameDirection.DOWNSTREAM)
        self.worker = PipelineWorker(
            Pipeline([self.up, processor, self.down]),
            params=PipelineParams(audio_in_sample_rate=audio_in, audio_out_sample_rate=audio_out,
                                  enable_metrics=True),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker: Any, frame: Any) -> None:
            self._started.set()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self._task = asyncio.create_task(runner.run())
        await asyncio.wait_for(self._started.wait(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.cancel()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    async def send(self, *frames: Frame) -> None:
        await self.worker.queue_frames(list(frames))

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Poll ``pred`` until true; the timeout only bounds a hung test, it is never the assertion."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            if loop.time() > end:
                return False
            await asyncio.sleep(0.05)
        return True

    async def settle(self, count: Callable[[], int], quiet: float = 1.0, timeout: float = 60.0) -> int:
        """Wait until ``count()`` stops changing for ``quiet`` seconds; returns the final count."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        last, since = count(), loop.time()
        while loop.time() < end:
            await asyncio.sleep(0.1)
            now = count()
            if now != last:
                last, since = now, loop.time()
            elif loop.time() - since >= quiet:
                break
        return last
