"""DTMF menu: key presses (RFC 4733, decoded by the transport) mapped to call actions.

Sits right after ``transport.input()``. A mapped key is consumed here: transfer asks the SIP side
to REFER the caller, hang-up ends the call, and "say" injects the configured text into the
conversation as a finished user turn (the LLM answers it like speech). Unmapped keys pass on.
"""

from __future__ import annotations

from typing import Protocol

from pipecat.frames.frames import (
    Frame,
    InputDTMFFrame,
    LLMMessagesAppendFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ivrbot.assistant_settings import DtmfAction
from ivrbot.logs import get_logger


class CallControl(Protocol):
    """What the SIP side offers the pipeline (the server implements it per call)."""

    async def hangup(self, reason: str) -> None: ...

    async def transfer(self, target_uri: str) -> bool: ...


class DTMFMenu(FrameProcessor):
    """Consumes mapped ``InputDTMFFrame``s and runs their action."""

    def __init__(self, menu: dict[str, DtmfAction], call_control: CallControl, *, call_id: str = "") -> None:
        super().__init__(name="DTMFMenu")
        self._menu = dict(menu)
        self._call_control = call_control
        self._log = get_logger(__name__).bind(call_id=call_id)
        self.handled: list[tuple[str, str]] = []
        self.unmapped = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputDTMFFrame):
            await self.push_frame(frame, direction)
            return
        key = str(frame.button.value)
        action = self._menu.get(key)
        if action is None:
            self.unmapped += 1
            self._log.info("dtmf key not in menu", key=key)
            await self.push_frame(frame, direction)
            return
        self.handled.append((key, action.action))
        self._log.info("dtmf action", key=key, action=action.action, target=action.target or None)
        if action.action == "hangup":
            await self._call_control.hangup(f"dtmf {key}")
        elif action.action == "transfer":
            # Stop the bot talking over the transfer; the SIP side sends the REFER.
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
            ok = await self._call_control.transfer(action.target)
            if not ok:
                self._log.warning("transfer refused", target=action.target)
        else:
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
            await self.push_frame(
                LLMMessagesAppendFrame(messages=[{"role": "user", "content": action.text}], run_llm=True)
            )
