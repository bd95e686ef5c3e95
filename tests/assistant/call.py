"""Run a CallAssistant over the loopback transport for the duration of a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from loopback_transport import LoopbackTransport

from ivrbot.apology import ApologyAudio
from ivrbot.assistant import CallAssistant
from ivrbot.assistant_settings import AssistantSettings
from ivrbot.dtmf_menu import CallControl


def urls(vosk: int, piper: int, llama: int) -> dict[str, str]:
    return {"vosk_url": f"ws://127.0.0.1:{vosk}", "piper_url": f"ws://127.0.0.1:{piper}",
            "llama_url": f"http://127.0.0.1:{llama}/v1"}


class Call:
    """``async with Call(settings, control) as c``: c.transport (caller side), c.assistant."""

    def __init__(self, settings: AssistantSettings, control: CallControl, *,
                 apology: ApologyAudio | None = None, call_id: str = "test-call") -> None:
        self.transport = LoopbackTransport()
        self.assistant = CallAssistant(self.transport, settings, control, call_id=call_id, apology=apology)
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Call:
        async def started(worker: Any, frame: Any) -> None:
            self._started.set()

        self.assistant.worker.add_event_handler("on_pipeline_started", started)
        self._task = asyncio.create_task(self.assistant.run())
        await asyncio.wait_for(self._started.wait(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.assistant.worker.cancel()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    @property
    def finished(self) -> bool:
        return self._task is not None and self._task.done()

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 120.0) -> bool:
        """Poll ``pred``; the timeout only bounds a hung test, it is never what is asserted."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            if loop.time() > end:
                return False
            await asyncio.sleep(0.05)
        return True
