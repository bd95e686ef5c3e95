"""A test transport: caller audio from a queue at real-time pace (silence when empty), bot audio recorded.

Stands in for OpenSIPSTransport in the pipeline tests: same contract (16 kHz InputAudioRawFrame every
20 ms, InputDTMFFrame, output paced at the output rate), without SIP/RTP.
"""

from __future__ import annotations

import asyncio
import time

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

FRAME_MS = 20


class _Input(BaseInputTransport):
    def __init__(self, owner: LoopbackTransport, params: TransportParams) -> None:
        super().__init__(params)
        self._owner = owner
        self._task: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._task is None:
            self._task = self.create_task(self._feed(), name="loopback_feed")

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_feed()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_feed()
        await super().cancel(frame)

    async def _stop_feed(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None

    async def _feed(self) -> None:
        rate = self.sample_rate
        step = rate * FRAME_MS // 1000 * 2
        pending = bytearray()
        next_t = time.monotonic()
        while True:
            while len(pending) < step and not self._owner.audio_in.empty():
                pending.extend(self._owner.audio_in.get_nowait())
            if len(pending) >= step:
                chunk, pending = bytes(pending[:step]), pending[step:]
                self._owner.caller_audio_sent += 1
            else:
                chunk = bytes(step)
                if pending:
                    chunk = bytes(pending) + bytes(step - len(pending))
                    pending.clear()
            await self.push_audio_frame(InputAudioRawFrame(audio=chunk, sample_rate=rate, num_channels=1))
            while not self._owner.dtmf_in.empty():
                await self.push_frame(InputDTMFFrame(button=KeypadEntry(self._owner.dtmf_in.get_nowait())))
            next_t += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))


class _Output(BaseOutputTransport):
    def __init__(self, owner: LoopbackTransport, params: TransportParams) -> None:
        super().__init__(params)
        self._owner = owner
        self._next_t = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        now = time.monotonic()
        self._owner.audio_out.append((now, frame.audio, frame.sample_rate))
        seconds = len(frame.audio) / 2 / frame.sample_rate
        self._next_t = max(self._next_t, now) + seconds
        await asyncio.sleep(max(0.0, self._next_t - time.monotonic()))
        return True


class LoopbackTransport(BaseTransport):
    """Caller side for tests: ``say(pcm)`` queues 16 kHz speech, ``press(key)`` a DTMF digit."""

    def __init__(self) -> None:
        super().__init__()
        params = TransportParams(audio_in_enabled=True, audio_out_enabled=True, audio_in_sample_rate=16000)
        self.audio_in: asyncio.Queue[bytes] = asyncio.Queue()
        self.dtmf_in: asyncio.Queue[str] = asyncio.Queue()
        self.audio_out: list[tuple[float, bytes, int]] = []
        self.caller_audio_sent = 0
        self._input = _Input(self, params)
        self._output = _Output(self, params)

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output

    def say(self, pcm16k: bytes) -> None:
        self.audio_in.put_nowait(pcm16k)

    def press(self, key: str) -> None:
        self.dtmf_in.put_nowait(key)

    def out_voiced_secs(self, since: float = 0.0, threshold: int = 300) -> float:
        """Seconds of bot audio written after ``since`` in chunks whose RMS is above ``threshold``."""
        import numpy as np

        total = 0.0
        for t, a, rate in self.audio_out:
            if t < since or len(a) < 2:
                continue
            x = np.frombuffer(a[: len(a) // 2 * 2], dtype="<i2").astype(np.float64)
            if x.size and float(np.sqrt(np.mean(x * x))) > threshold:
                total += x.size / rate
        return total
