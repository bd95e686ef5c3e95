"""The SIP application of ``ivrbot serve``: admission, SDP answer, a call's media and pipeline, tear-down.

``on_invite`` admits or refuses an INVITE (capacity, RTP ports), opens the call's RTP session,
builds its pipeline and answers with the SDP; the admitted :class:`ActiveCall` is the SIP shell's
handler of the call's later events, and its ``on_ended`` (called exactly once however the call ends)
releases everything: the pipeline, the call's task, the sockets and the port lease. A failure inside
one call is logged with its Call-ID and ends that call only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

from ivrbot.call_pipeline import CallMedia, CallPipeline, PipelineFactory
from ivrbot.config import BotConfig
from ivrbot.logs import get_logger
from ivrbot.memory import release_call_garbage
from ivrbot.metrics import Metrics
from ivrbot.rtp.ports import PortLease, PortPool, PortsExhausted
from ivrbot.rtp.session import MediaDirection, RtpSession
from ivrbot.sdp import SdpOffer, build_answer
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import Accept, Reject
from ivrbot.telemetry.budget import LatencyBudget
from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.clock import BotClock
from ivrbot.telemetry.observer import CallTraceObserver
from ivrbot.telemetry.setup import Tracing
from ivrbot.transport import OpenSIPSTransport

log = get_logger(__name__)

#: Retry-After (s) on a refusal at capacity. 503, not 486: the proxy fails over to the next bot on it
#: without marking this one down (a bot at capacity is healthy), and a draining bot answers the same.
BUSY_RETRY_AFTER = 5
#: How long a pipeline may take to stop before the call's task is cancelled under it.
PIPELINE_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class CallLimits:
    """What the call manager takes from the bot's configuration."""

    max_calls: int
    rtp_port_min: int
    rtp_port_max: int
    rtp_host: str
    #: the address put in the SDP answer's ``c=`` line
    advertised: str
    #: a loopback ``advertised`` is allowed only when the operator configured it
    allow_loopback: bool = False

    @classmethod
    def from_config(cls, config: BotConfig, advertised: str) -> CallLimits:
        return cls(
            max_calls=config.max_calls,
            rtp_port_min=config.rtp_port_min,
            rtp_port_max=config.rtp_port_max,
            rtp_host=config.sip_host,
            advertised=advertised,
            allow_loopback=bool(config.advertised_address),
        )


class SipCallControl:
    """What a call's pipeline may do to its own call, carried out on the SIP side."""

    def __init__(self, call: SipCall) -> None:
        self._call = call

    async def hangup(self, reason: str) -> None:
        await self._call.hangup()

    async def transfer(self, target_uri: str) -> bool:
        ok = await self._call.transfer(target_uri)
        if ok:  # RFC 5589: the transferor leaves once the transfer succeeded
            await self._call.hangup()
        return ok


@dataclass(eq=False)
class ActiveCall:
    """One admitted call: its SIP handle, media, pipeline and trace; the SIP shell's handler of its events."""

    manager: CallManager
    sip: SipCall
    session: RtpSession
    transport: OpenSIPSTransport
    trace: CallTrace
    pipeline: CallPipeline | None = None
    task: asyncio.Task[None] | None = None
    #: the 200 OK went out (a call cancelled while being set up never is)
    answered: bool = False
    answer_version: int = 1
    session_id: int = field(default_factory=lambda: random.randrange(1, 2**31))
    started: float = field(default_factory=time.monotonic)

    @property
    def call_id(self) -> str:
        return self.sip.call_id

    async def on_answered(self) -> None:
        self.manager.answered(self)

    async def on_established(self) -> None:
        self.trace.sip_event("ack")
        info = self.sip.info
        await self.transport.participant_joined({"from": info.from_uri, "to": info.to_uri})

    async def on_reinvite(self, offer: SdpOffer) -> Accept | Reject:
        return self.manager.reinvite(self, offer)

    async def on_ended(self, reason: str) -> None:
        await self.manager.ended(self, reason)


class CallManager:
    """The SIP application: admission, media, pipelines, clean-up."""

    def __init__(
        self,
        limits: CallLimits,
        pipelines: PipelineFactory,
        *,
        metrics: Metrics,
        tracing: Tracing,
        budget: LatencyBudget | None = None,
    ) -> None:
        self.limits = limits
        self.pipelines = pipelines
        self.metrics = metrics
        self.tracing = tracing
        self.budget = budget if budget is not None else LatencyBudget.from_env()
        self.ports = PortPool(limits.rtp_port_min, limits.rtp_port_max, host=limits.rtp_host)
        #: calls whose media is up and whose end has not been handled yet
        self.calls: set[ActiveCall] = set()
        #: INVITEs admitted whose media and pipeline are still being set up (not yet in `calls`)
        self._setting_up = 0
        #: set when no call is up and none is still being torn down
        self.idle = asyncio.Event()
        self.idle.set()
        self._ending = 0

    # -- SIP application ------------------------------------------------------------------------
    async def on_invite(self, call: SipCall, offer: SdpOffer) -> Answer | Reject:
        clog = log.bind(call_id=call.call_id)
        # Calls still being set up count too: INVITEs arrive concurrently and set-up awaits.
        if len(self.calls) + self._setting_up >= self.limits.max_calls:
            self.metrics.call_rejected("capacity")
            clog.warning("call refused: at capacity", max_calls=self.limits.max_calls)
            return Reject(503, "At Capacity", retry_after=BUSY_RETRY_AFTER)
        try:
            lease = self.ports.allocate()
        except PortsExhausted as exc:
            self.metrics.call_rejected("no_rtp_ports")
            clog.warning("call refused: no RTP ports", error=str(exc))
            return Reject(503, "Out Of Media Ports", retry_after=BUSY_RETRY_AFTER)
        self._setting_up += 1
        active: ActiveCall | None = None
        try:
            active = await self._start_call(call, offer, lease)
            answer = self._answer(active, offer)
        except BaseException as exc:
            # Nothing of a call that could not be answered may outlive the refusal (or a shutdown).
            if active is not None:
                self.calls.discard(active)
                await self._stop_call(active)
                active.trace.end("setup_failed")
                if not self.calls:
                    self.idle.set()
            lease.release()
            if not isinstance(exc, Exception):
                raise
            self.metrics.call_rejected("internal_error")
            clog.exception("call set-up failed", error=str(exc))
            return Reject(500, "Server Internal Error", retry_after=BUSY_RETRY_AFTER)
        finally:
            self._setting_up -= 1
        return Answer(answer, active)

    def answered(self, active: ActiveCall) -> None:
        """The 200 OK went out."""
        active.answered = True
        self.metrics.call_answered()
        active.trace.answered()
        log.info(
            "call answered", call_id=active.call_id, remote=active.sip.info.remote_addr,
            rtp_port=active.session.local_port, calls=len(self.calls),
        )

    def reinvite(self, active: ActiveCall, offer: SdpOffer) -> Accept | Reject:
        m = offer.media
        remote = None if m.on_hold else (m.remote_address, m.remote_port)
        active.session.update_remote(remote, MediaDirection(m.direction))
        active.answer_version += 1
        active.trace.sip_event("reinvite", direction=m.direction)
        log.info("call media updated", call_id=active.call_id, remote=remote, direction=m.direction)
        return Accept(self._answer(active, offer))

    async def ended(self, active: ActiveCall, reason: str) -> None:
        """Release the call, once; later calls (shutdown after a BYE) do nothing."""
        if active not in self.calls:
            return
        call_id = active.call_id
        self.calls.discard(active)
        self._ending += 1
        try:
            with contextlib.suppress(Exception):
                await active.transport.participant_left(reason)
            await self._stop_call(active)
        finally:
            self._ending -= 1
        c = active.session.counters
        active.trace.end(reason, packets_received=c.received, packets_sent=c.sent)
        if active.answered:
            self.metrics.call_ended(reason)
        else:  # cancelled (or failed) before the 200 OK: never counted as answered
            self.metrics.call_rejected("cancelled" if reason == "cancelled" else "internal_error")
        log.info(
            "call ended", call_id=call_id, reason=reason,
            seconds=round(time.monotonic() - active.started, 1), calls=len(self.calls),
        )
        # once this call's frames (and the SIP shell's that called this) have let go of it
        asyncio.get_running_loop().call_soon(self._release_garbage, call_id)
        if not self.calls and not self._ending:
            self.idle.set()

    @staticmethod
    def _release_garbage(call_id: str) -> None:
        freed = release_call_garbage()
        log.info("call garbage released", call_id=call_id, objects=freed.objects,
                  ms=round(freed.seconds * 1000, 1))

    async def hangup_all(self) -> None:
        await asyncio.gather(*(active.sip.hangup() for active in list(self.calls)), return_exceptions=True)

    async def stop(self, grace: float = 10.0) -> None:
        """Shutdown: hang up every call, wait up to ``grace`` for their ends, then release the rest
        (a peer that never answers the BYE does not keep a port or a task)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hangup_all(), grace)
        with contextlib.suppress(TimeoutError):  # the SIP shell's on_ended tasks tear the calls down
            await asyncio.wait_for(self.idle.wait(), grace)
        for active in list(self.calls):
            await self.ended(active, "shutdown")

    # -- media and pipeline ----------------------------------------------------------------------
    def _answer(self, active: ActiveCall, offer: SdpOffer) -> str:
        return build_answer(
            offer.media,
            address=self.limits.advertised,
            port=active.session.local_port,
            session_id=active.session_id,
            session_version=active.answer_version,
            allow_loopback=self.limits.allow_loopback,
        )

    async def _start_call(self, call: SipCall, offer: SdpOffer, lease: PortLease) -> ActiveCall:
        m = offer.media
        info = call.info
        trace = CallTrace(
            call.call_id,
            tracer=self.tracing.tracer(),
            from_uri=info.from_uri,
            to_uri=info.to_uri,
            remote=info.remote_addr,
            metrics=self.metrics,
            budget=self.budget,
        )
        session = RtpSession(
            lease,
            None if m.on_hold else (m.remote_address, m.remote_port),
            call_id=call.call_id,
            audio_payload_type=m.audio_pt,
            dtmf_payload_type=m.dtmf_pt,
            direction=MediaDirection(m.direction),
            ptime_ms=m.ptime,
        )
        transport = OpenSIPSTransport(session, call.call_id)
        active = ActiveCall(self, call, session, transport, trace)
        self._listen(active)
        try:
            await session.start()
            self.metrics.watch_rtp_session(session, lambda: session.counters)
            clock = BotClock()  # frame timestamps on time.monotonic(), so stages are timed at the push
            media = CallMedia(
                call.call_id, transport, SipCallControl(call), observers=[CallTraceObserver(trace, clock)], clock=clock
            )
            active.pipeline = self.pipelines(media)
        except BaseException:
            self.metrics.retire_rtp_session(session)
            await session.stop()  # closes the sockets and returns the ports
            trace.end("setup_failed")
            raise
        self.calls.add(active)
        self.idle.clear()
        active.task = trace.create_task(self._run(active), name=f"call-{call.call_id}")
        return active

    def _listen(self, active: ActiveCall) -> None:
        session, trace, metrics = active.session, active.trace, self.metrics
        # The first reply packet is timed in the sender's own callback, right after sendto(), not
        # a task hop later through a transport event.
        session.listen(spurt_sent=lambda _seq: trace.mark_first_packet_sent())

        async def _rtp_started(_t: object, _call_id: str) -> None:
            metrics.transport_event("rtp_started")
            trace.rtp_started(local_port=session.local_port, remote=session.remote)

        async def _joined(_t: object, _call_id: str, _participant: object) -> None:
            metrics.transport_event("participant_joined")

        async def _left(_t: object, _call_id: str, _reason: str) -> None:
            metrics.transport_event("participant_left")

        async def _media_error(_t: object, call_id: str, error: str) -> None:
            metrics.transport_event("error")
            log.warning("media error", call_id=call_id, error=error)

        t = active.transport
        t.add_event_handler("on_rtp_started", _rtp_started)
        t.add_event_handler("on_participant_joined", _joined)
        t.add_event_handler("on_participant_left", _left)
        t.add_event_handler("on_error", _media_error)

    async def _run(self, active: ActiveCall) -> None:
        """A pipeline that crashes or stops on its own ends its call (BYE), never the process or other calls.

        Pipecat ends ``run()`` without raising on a fatal error or a set-up timeout; a call left up then
        would hold its port and slot with nobody listening.
        """
        assert active.pipeline is not None
        try:
            await active.pipeline.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("call pipeline failed", call_id=active.call_id, error=str(exc))
        if active in self.calls:
            log.warning("call pipeline ended while the call is up; hanging up", call_id=active.call_id)
            await active.sip.hangup()

    async def _stop_call(self, active: ActiveCall) -> None:
        try:
            if active.pipeline is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(active.pipeline.stop(), PIPELINE_STOP_TIMEOUT)
        finally:
            # Whatever happened above (even a cancel of this coroutine), the call's task, sockets and
            # ports are released.
            if active.task is not None:
                active.task.cancel()
                await asyncio.wait([active.task])
            self.metrics.retire_rtp_session(active.session)
            await active.session.stop()
