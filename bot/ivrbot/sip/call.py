"""One call's slot in the SIP shell, which is also the application's handle on that call.

The shell makes the slot when an INVITE arrives and passes it to ``CallApplication.on_invite``, so
the application holds its call's controls (hang up, transfer, wait for the end) from the first
moment, with nothing to wire afterwards. Everything the shell keeps about a call lives here: the lock
that runs the call's callbacks one after another, the accepted call's handler, the future a hang-up
waits on and a pending transfer's outcome. The slot leaves the shell's table when the call ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ivrbot.sdp import SdpOffer
from ivrbot.sip.events import CallInfo, Decision
from ivrbot.sip.useragent import UserAgent


class CallHandler(Protocol):
    """An accepted call's later events, delivered in order, each after the previous one returned."""

    async def on_answered(self) -> None:
        """The 200 OK went out (a call the caller cancelled during ``on_invite`` never gets here)."""

    async def on_established(self) -> None:
        """The ACK for the 200 OK arrived."""

    async def on_reinvite(self, offer: SdpOffer) -> Decision: ...

    async def on_ended(self, reason: str) -> None:
        """Called exactly once, however the call ended: the place to free what ``on_invite`` took."""


@dataclass(frozen=True)
class Answer:
    """``on_invite``'s acceptance: the SDP answer, and the handler of the call's later events."""

    sdp: str
    handler: CallHandler


class SipCall:
    """The shell's record of one call and the application's controls on it."""

    def __init__(self, info: CallInfo, core: UserAgent, flush: Callable[[], None]) -> None:
        self.info = info
        self._core = core
        self._flush = flush
        #: runs this call's application callbacks one at a time, in the order the core produced them
        self.lock = asyncio.Lock()
        #: set when ``on_invite`` answered: the handler of everything that follows
        self.handler: CallHandler | None = None
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._transfer: asyncio.Future[bool] | None = None

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def ended(self) -> bool:
        return self._ended.done()

    async def wait_ended(self) -> str:
        """The end reason, once the SIP core has ended the call (the handler's ``on_ended`` may still run)."""
        return await asyncio.shield(self._ended)

    async def hangup(self) -> bool:
        """End the call (BYE along the route set, or a final error before the answer) and wait until it
        has ended. False if it had already ended."""
        if self._ended.done() or not self._core.hangup(self.call_id, asyncio.get_running_loop().time()):
            return False
        self._flush()
        await asyncio.shield(self._ended)
        return True

    async def transfer(self, target_uri: str, timeout: float = 10.0) -> bool:
        """Blind transfer (REFER); True once a NOTIFY reports 2xx, False on failure or timeout."""
        loop = asyncio.get_running_loop()
        if self._transfer is not None or not self._core.transfer(self.call_id, target_uri, loop.time(), timeout):
            return False
        fut: asyncio.Future[bool] = loop.create_future()
        self._transfer = fut
        self._flush()
        try:
            return await fut
        finally:
            self._transfer = None

    # -- called by the shell ------------------------------------------------------------------
    def transfer_outcome(self, ok: bool) -> None:
        if self._transfer is not None and not self._transfer.done():
            self._transfer.set_result(ok)

    def mark_ended(self, reason: str) -> None:
        if not self._ended.done():
            self._ended.set_result(reason)

    def abandon(self) -> None:
        """The shell stops: nobody waits on this call's futures any more."""
        for fut in (self._ended, self._transfer):
            if fut is not None and not fut.done():
                fut.cancel()
