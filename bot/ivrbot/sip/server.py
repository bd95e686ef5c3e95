"""The asyncio shell around :class:`UserAgent`: one UDP socket, one timer task, one slot per call.

The shell only moves bytes and time. Each call has one :class:`~ivrbot.sip.call.SipCall`, made when
its INVITE arrives and handed to ``on_invite`` as the application's handle on the call. Application
callbacks run as tasks so a slow ``on_invite`` (port allocation, pipeline start) never stops the
socket: 100 Trying goes out at once, and a CANCEL arriving meanwhile is answered at once. Callbacks
of one call run one after another, in the order the core produced them, and the handler of an
:class:`Answer` gets ``on_ended`` exactly once (so the application can always free what it took).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from ivrbot.logs import get_logger
from ivrbot.sdp import SdpOffer
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import (
    Accept,
    Addr,
    CallEnded,
    CallEstablished,
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
    async def on_invite(self, call: SipCall, offer: SdpOffer) -> Answer | Reject:
        """Admit or refuse a new call; ``call`` is the application's handle on it from now on."""


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
        #: the calls the core has not ended yet, by Call-ID (the events of the core name calls so)
        self._calls: dict[str, SipCall] = {}

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
        for call in self._calls.values():
            call.abandon()
        self._calls.clear()

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

    def call(self, call_id: str) -> SipCall | None:
        """The handle of a call not yet ended (None once it has)."""
        return self._calls.get(call_id)

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

    def _spawn(self, call: SipCall, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                async with call.lock:
                    await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sip.app_callback_failed", call_id=call.call_id)

        task = asyncio.create_task(run(), name=f"sip-call-{call.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, event: Event) -> None:
        call_id = event.call.call_id
        if isinstance(event, IncomingCall):
            new = SipCall(event.call, self.core, self._flush)
            self._calls[call_id] = new
            self._spawn(new, lambda: self._run_invite(new, event.offer))
            return
        call = self._calls.get(call_id)
        if call is None:
            return
        handler = call.handler
        if isinstance(event, IncomingReinvite):
            self._spawn(call, lambda: self._run_reinvite(call, event.offer))
        elif isinstance(event, CallEstablished):
            if handler is not None:
                self._spawn(call, handler.on_established)
        elif isinstance(event, CallEnded):
            del self._calls[call_id]
            call.mark_ended(event.reason)
            self._spawn(call, lambda: self._run_ended(call, event.reason))
        elif isinstance(event, TransferOutcome):
            call.transfer_outcome(event.ok)

    async def _run_invite(self, call: SipCall, offer: SdpOffer) -> None:
        decision: Answer | Reject
        try:
            decision = await self._app.on_invite(call, offer)
        except Exception:
            log.exception("sip.on_invite_failed", call_id=call.call_id)
            decision = Reject(500)
        if isinstance(decision, Answer):
            call.handler = decision.handler
            answered = self.core.answer_invite(call.call_id, Accept(decision.sdp), asyncio.get_running_loop().time())
        else:
            answered = self.core.answer_invite(call.call_id, decision, asyncio.get_running_loop().time())
        self._flush()
        if answered and call.handler is not None:
            await call.handler.on_answered()

    async def _run_reinvite(self, call: SipCall, offer: SdpOffer) -> None:
        decision: Decision = Reject(500)
        try:
            if call.handler is not None:
                decision = await call.handler.on_reinvite(offer)
        except Exception:
            log.exception("sip.on_reinvite_failed", call_id=call.call_id)
        self.core.answer_reinvite(call.call_id, decision, asyncio.get_running_loop().time())
        self._flush()

    @staticmethod
    async def _run_ended(call: SipCall, reason: str) -> None:
        if call.handler is not None:
            await call.handler.on_ended(reason)

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
