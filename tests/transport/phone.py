"""A scripted RTP peer over real UDP for media tests: sends on a 20 ms tick, records what it hears."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import Frame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from ivrbot.rtp.packet import RtpPacket, parse_rtp
from ivrbot.rtp.ports import PortPool


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition driven by UDP arrivals (the timeout is a safety net, not an assertion)."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - the condition is set by datagram callbacks, not an Event
            await asyncio.sleep(0.005)


def port_pool(pairs: int = 8) -> PortPool:
    """A pool over a random high range on loopback (PortPool itself skips ports that are taken)."""
    base = random.randrange(30000, 60000, 2)
    return PortPool(base, base + 2 * pairs - 1, host="127.0.0.1")


@dataclass
class Heard:
    packet: RtpPacket
    tick: int


@dataclass
class Phone(asyncio.DatagramProtocol):
    """``tick`` counts the phone's own 20 ms sends; every received packet records the tick it arrived on."""

    heard: list[Heard] = field(default_factory=list)
    tick: int = 0
    transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.heard.append(Heard(parse_rtp(data), self.tick))

    @classmethod
    async def open(cls) -> Phone:
        loop = asyncio.get_running_loop()
        phone = cls()
        transport, _ = await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        phone.transport = transport
        return phone

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def play(self, dest: tuple[str, int], schedule: list[list[bytes]]) -> None:
        """Send ``schedule[i]`` (zero or more datagrams) on tick i, paced by absolute deadlines."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, datagrams in enumerate(schedule):
            delay = t0 + i * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.tick = i
            for d in datagrams:
                self.transport.sendto(d, dest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FrameRecorder(FrameProcessor):
    """Records frames of the given types passing through (downstream), then passes everything on."""

    def __init__(self, *types: type[Frame]) -> None:
        super().__init__()
        self.types = types
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, self.types):
            self.frames.append(frame)
        await self.push_frame(frame, direction)


class RunningWorker:
    """Runs a PipelineWorker under a WorkerRunner in the background; ``stop()`` cancels and waits."""

    def __init__(self, worker: PipelineWorker) -> None:
        self.worker = worker
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self._task = asyncio.create_task(runner.run())

    async def stop(self) -> None:
        await self.worker.cancel()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)
