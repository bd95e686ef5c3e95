"""The asyncio shell around :class:`UserAgent`: one UDP socket, one timer task, app callbacks.

The shell only moves bytes and time. Application callbacks run as tasks so a slow ``on_invite``
(port allocation, pipeline start) never stops the socket: 100 Trying goes out at once, and a
CANCEL arriving meanwhile is answered at once. Callbacks of one call run one after another, in
the order the core produced them, and ``on_ended`` is called exactly once for every call whose
``on_invite`` returned :class:`Accept` (so the application can always free what it allocated).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from ivrbot.logs import get_logger
from ivrbot.sdp import SdpOffer
from ivrbot.sip.events import (
    Accept,
    Addr,
    CallEnded,
    CallEstablished,
    CallInfo,
    Decision,
    Event,
    IncomingCall,
    IncomingReinvite,
    Reject,
    TransferOutcome,
)
from ivrbot.sip.transaction import SipTimers
from ivrbot.sip.useragent import SipStats, UaConfig, UserAgent

log = get_logger(__name__)



class CallApplication(Protocol):
    async def on_invite(self, call: CallInfo, offer: SdpOffer) -> Decision: ...

    async def on_answered(self, call: CallInfo) -> None:
        """The 200 OK went out: an Accept the caller cancelled meanwhile never gets here."""

    async def on_established(self, call: CallInfo) -> None: ...

    async def on_reinvite(self, call: CallInfo, offer: SdpOffer) -> Decision: ...

    async def on_ended(self, call: CallInfo, reason: str) -> None: ...


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip.socket_error", error=str(exc))


class SipServer:
    """``SipServer(host, port, app, advertised_address=...)``; ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        app: CallApplication,
        *,
        advertised_address: str,
        advertised_port: int | None = None,
        trusted_proxies: tuple[str, ...] | list[str] = (),
        user_agent: str = "ivrbot",
        timers: SipTimers | None = None,
        drain_retry_after: int = 30,
    ) -> None:
        self._host = host
        self._port = port
        self._app = app
        self._config = UaConfig(
            advertised_address=advertised_address,
            advertised_port=advertised_port or port,
            trusted_proxies=tuple(trusted_proxies),
            user_agent=user_agent,
            timers=timers or SipTimers(),
            drain_retry_after=drain_retry_after,
        )
        self._advertised_port_fixed = advertised_port is not None
        self.core = UserAgent(self._config)
        self._transport: asyncio.DatagramTransport | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}
        self._accepted: set[str] = set()
        self._ended: dict[str, asyncio.Future[None]] = {}
        self._transfers: dict[str, asyncio.Future[bool]] = {}

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._on_datagram), local_addr=(self._host, self._port)
        )
        self._transport = transport
        bound = transport.get_extra_info("sockname")
        self._port = int(bound[1])
        if not self._advertised_port_fixed:
            self._config.advertised_port = self._port
        self._timer_task = asyncio.create_task(self._timer_loop(), name="sip-timers")
        log.info("sip.listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
            self._timer_task = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fut in self._ended.values():
            if not fut.done():
                fut.cancel()
        for tfut in self._transfers.values():
            if not tfut.done():
                tfut.cancel()

    @property
    def port(self) -> int:
        return self._port

    @property
    def stats(self) -> SipStats:
        return self.core.stats

    @property
    def active_calls(self) -> int:
        return self.core.active_calls

    @property
    def draining(self) -> bool:
        return self.core.draining

    def start_draining(self) -> None:
        """503 to new INVITEs and OPTIONS from now on; live calls continue."""
        self.core.start_draining()

    # ---- application actions -------------------------------------------------------------
    async def hangup(self, call_id: str) -> bool:
        """End a call (BYE along the route set) and wait until it has ended. False if unknown."""
        loop = asyncio.get_running_loop()
        fut = self._ended.get(call_id)
        if fut is None:
            fut = loop.create_future()
            self._ended[call_id] = fut
        if not self.core.hangup(call_id, loop.time()):
            self._ended.pop(call_id, None)
            return False
        self._flush()
        await asyncio.shield(fut)
        return True

    async def transfer(self, call_id: str, target_uri: str, timeout: float = 10.0) -> bool:
        """Blind transfer (REFER); True once a NOTIFY reports 2xx, False on failure or timeout."""
        loop = asyncio.get_running_loop()
        if not self.core.transfer(call_id, target_uri, loop.time(), timeout):
            return False
        fut: asyncio.Future[bool] = loop.create_future()
        self._transfers[call_id] = fut
        self._flush()
        try:
            return await fut
        finally:
            self._transfers.pop(call_id, None)

    # ---- plumbing ------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        self.core.feed(data, addr, asyncio.get_running_loop().time())
        self._flush()

    def _flush(self) -> None:
        if self._transport is not None:
            for data, addr in self.core.take_datagrams():
                self._transport.sendto(data, addr)
        for event in self.core.take_events():
            self._dispatch(event)
        self._wake.set()

    def _spawn(self, call_id: str, work: Callable[[], Awaitable[None]]) -> None:
        lock = self._locks.setdefault(call_id, asyncio.Lock())
        self._pending[call_id] = self._pending.get(call_id, 0) + 1

        async def run() -> None:
            try:
                async with lock:
                    await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sip.app_callback_failed", call_id=call_id)
            finally:
                self._pending[call_id] -= 1
                if self._pending[call_id] == 0 and call_id not in self._accepted:
                    del self._pending[call_id]
                    self._locks.pop(call_id, None)

        task = asyncio.create_task(run(), name=f"sip-call-{call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, event: Event) -> None:
        call_id = event.call.call_id
        if isinstance(event, IncomingCall):
            self._spawn(call_id, lambda: self._run_invite(event.call, event.offer))
        elif isinstance(event, IncomingReinvite):
            self._spawn(call_id, lambda: self._run_reinvite(event.call, event.offer))
        elif isinstance(event, CallEstablished):
            self._spawn(call_id, lambda: self._app.on_established(event.call))
        elif isinstance(event, CallEnded):
            fut = self._ended.pop(call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
            self._spawn(call_id, lambda: self._run_ended(event.call, event.reason))
        elif isinstance(event, TransferOutcome):
            tfut = self._transfers.get(call_id)
            if tfut is not None and not tfut.done():
                tfut.set_result(event.ok)

    async def _run_invite(self, call: CallInfo, offer: SdpOffer) -> None:
        decision: Decision
        try:
            decision = await self._app.on_invite(call, offer)
        except Exception:
            log.exception("sip.on_invite_failed", call_id=call.call_id)
            decision = Reject(500)
        if isinstance(decision, Accept):
            self._accepted.add(call.call_id)
        answered = self.core.answer_invite(call.call_id, decision, asyncio.get_running_loop().time())
        self._flush()
        if answered and isinstance(decision, Accept):
            await self._app.on_answered(call)

    async def _run_reinvite(self, call: CallInfo, offer: SdpOffer) -> None:
        decision: Decision
        try:
            decision = await self._app.on_reinvite(call, offer)
        except Exception:
            log.exception("sip.on_reinvite_failed", call_id=call.call_id)
            decision = Reject(500)
        self.core.answer_reinvite(call.call_id, decision, asyncio.get_running_loop().time())
        self._flush()

    async def _run_ended(self, call: CallInfo, reason: str) -> None:
        if call.call_id in self._accepted:
            self._accepted.discard(call.call_id)
            await self._app.on_ended(call, reason)

    async def _timer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            deadline = self.core.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self.core.tick(loop.time())
            if self._transport is not None:
                for data, addr in self.core.take_datagrams():
                    self._transport.sendto(data, addr)
            for event in self.core.take_events():
                self._dispatch(event)
