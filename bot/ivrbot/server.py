"""`ivrbot serve`: the SIP endpoint, one RTP session and one Pipecat pipeline per call.

The CallManager is the SIP application: it admits or refuses an INVITE (capacity, RTP ports),
builds the SDP answer, starts the call's media and pipeline while the 200 OK is in flight, and
releases everything in `on_ended`, which the SIP layer calls exactly once per accepted call
however it ends. A failure inside one call is logged with its Call-ID and ends that call only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil

from ivrbot.apology import ApologyAudio, render_apology
from ivrbot.assistant import CallAssistant
from ivrbot.config import BotConfig, ConfigError, load_config
from ivrbot.echo import build_echo_worker
from ivrbot.http_api import HttpApi
from ivrbot.logs import get_logger
from ivrbot.metrics import Metrics
from ivrbot.rtp.ports import PortLease, PortPool, PortsExhausted
from ivrbot.rtp.session import MediaDirection, RtpSession
from ivrbot.sdp import SdpOffer, build_answer
from ivrbot.services.llama_llm import LlamaLLMService
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import Accept, Reject
from ivrbot.sip.server import SipServer
from ivrbot.telemetry.budget import LatencyBudget
from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.clock import BotClock
from ivrbot.telemetry.observer import CallTraceObserver
from ivrbot.telemetry.setup import Tracing, configure_tracing
from ivrbot.transport import OpenSIPSTransport

log = get_logger(__name__)

#: Retry-After (s) on a refusal at capacity. 503, not 486: the proxy fails over to the next bot on it
#: without marking this one down (a bot at capacity is healthy), and a draining bot answers the same.
BUSY_RETRY_AFTER = 5


def default_advertised_address() -> str:
    """The host's first non-loopback IPv4 address: what a proxy on another host can reach."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET":
                with contextlib.suppress(ValueError):
                    if not ipaddress.ip_address(a.address).is_loopback:
                        return str(a.address)
    return "127.0.0.1"


class SipCallControl:
    """What a call's assistant may do to its own call, carried out on the SIP side."""

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
    task: asyncio.Task[None] | None = None
    #: the 200 OK went out (a call cancelled while being set up never is)
    answered: bool = False
    assistant: CallAssistant | None = None
    stop_worker: Any = None
    answer_version: int = 1
    session_id: int = field(default_factory=lambda: random.randrange(1, 2**31))
    started: float = field(default_factory=time.monotonic)

    @property
    def call_id(self) -> str:
        return self.sip.call_id

    async def on_answered(self) -> None:
        await self.manager.answered(self)

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

    def __init__(self, config: BotConfig, *, metrics: Metrics, tracing: Tracing, apology: ApologyAudio) -> None:
        self.config = config
        self.settings = config.assistant_settings()
        self.metrics = metrics
        self.tracing = tracing
        self.apology = apology
        self.budget = LatencyBudget.from_env()
        self.ports = PortPool(config.rtp_port_min, config.rtp_port_max, host=config.sip_host)
        self.advertised = config.advertised_address or default_advertised_address()
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
        if len(self.calls) + self._setting_up >= self.config.max_calls:
            self.metrics.call_rejected("capacity")
            clog.warning("call refused: at capacity", max_calls=self.config.max_calls)
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

    async def answered(self, active: ActiveCall) -> None:
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
        if active not in self.calls:
            return
        self.calls.discard(active)
        clog = log.bind(call_id=active.call_id)
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
        clog.info(
            "call ended", reason=reason, seconds=round(time.monotonic() - active.started, 1), calls=len(self.calls)
        )
        if not self.calls and not self._ending:
            self.idle.set()

    # -- media and pipeline ----------------------------------------------------------------------
    def _answer(self, active: ActiveCall, offer: SdpOffer) -> str:
        return build_answer(
            offer.media,
            address=self.advertised,
            port=active.session.local_port,
            session_id=active.session_id,
            session_version=active.answer_version,
            allow_loopback=bool(self.config.advertised_address),
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
        async def _rtp_started(_t: Any, _call_id: str) -> None:
            trace.rtp_started(local_port=session.local_port, remote=session.remote)

        async def _media_error(_t: Any, call_id: str, error: str) -> None:
            log.warning("media error", call_id=call_id, error=error)

        # The first reply packet is timed in the sender's own callback, right after sendto(), not
        # a task hop later through the transport's event.
        transport_hook = session.on_spurt_sent

        def _spurt_sent(seq: int) -> None:
            trace.mark_first_packet_sent()
            if transport_hook is not None:
                transport_hook(seq)

        session.on_spurt_sent = _spurt_sent
        transport.add_event_handler("on_rtp_started", _rtp_started)
        transport.add_event_handler("on_error", _media_error)

        await session.start()
        try:
            return await self._start_pipeline(call, active, trace)
        except Exception:
            self.metrics.retire_rtp_session(session)
            await session.stop()  # closes the sockets and returns the ports
            trace.end("setup_failed")
            raise

    async def _start_pipeline(self, call: SipCall, active: ActiveCall, trace: CallTrace) -> ActiveCall:
        session, transport = active.session, active.transport
        self.metrics.watch_rtp_session(session, lambda: session.counters)
        clock = BotClock()  # frame timestamps on time.monotonic(), so stages are timed at the push
        observer = CallTraceObserver(trace, clock)
        if self.config.echo:
            worker = build_echo_worker(transport)
            active.stop_worker = worker.cancel
            run = self._run_worker(worker)
        else:
            assistant = CallAssistant(
                transport,
                self.settings,
                SipCallControl(call),
                call_id=call.call_id,
                apology=self.apology,
                enable_tracing=self.tracing.enabled,
                observers=[observer],
                clock=clock,
            )
            active.assistant = assistant
            active.stop_worker = assistant.worker.cancel
            run = assistant.run()
        self.calls.add(active)
        self.idle.clear()
        active.task = trace.create_task(self._guard(active, run), name=f"call-{call.call_id}")
        return active

    @staticmethod
    async def _run_worker(worker: Any) -> None:
        from pipecat.workers.runner import WorkerRunner

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    async def _guard(self, active: ActiveCall, run: Any) -> None:
        """A pipeline that crashes or stops on its own ends its call (BYE), never the process or other calls.

        Pipecat ends `run()` without raising on a fatal error or a set-up timeout; a call left up then
        would hold its port and slot with nobody listening.
        """
        try:
            await run
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("call pipeline failed", call_id=active.call_id, error=str(exc))
        if active in self.calls:
            log.warning("call pipeline ended while the call is up; hanging up", call_id=active.call_id)
            await active.sip.hangup()

    async def _stop_call(self, active: ActiveCall) -> None:
        try:
            if active.stop_worker is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(active.stop_worker(), 5.0)
        finally:
            # Whatever happened above (even a cancel of this coroutine), the call's task, sockets and
            # ports are released.
            if active.task is not None:
                active.task.cancel()
                await asyncio.wait([active.task])
            self.metrics.retire_rtp_session(active.session)
            await active.session.stop()

    async def hangup_all(self) -> None:
        await asyncio.gather(*(active.sip.hangup() for active in list(self.calls)), return_exceptions=True)


async def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme.startswith("http"):
        try:
            base = f"{parts.scheme}://{parts.netloc}"
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5)) as s,
                s.get(f"{base}/health") as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), 1.5)
    except (OSError, TimeoutError):
        return False
    w.close()
    return True


class BotServer:
    """The whole bot process: tracing, metrics, HTTP, SIP, calls; `stop()` releases all of it."""

    def __init__(self, config: BotConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.tracing = configure_tracing()
        settings = config.assistant_settings()
        self.apology = render_apology(settings.apology_text)
        self.calls = CallManager(config, metrics=self.metrics, tracing=self.tracing, apology=self.apology)
        self.sip = SipServer(
            config.sip_host,
            config.sip_port,
            self.calls,
            advertised_address=self.calls.advertised,
            trusted_proxies=config.trusted_proxies,
        )
        self.metrics.watch_sip(lambda: self.sip.stats)
        self.metrics.watch_process(lambda: len(asyncio.all_tasks()), lambda: self.calls.ports.in_use)
        self.http = HttpApi(
            self.metrics,
            host=config.http_host,
            port=config.http_port,
            metrics_host=config.metrics_host,
            readiness=self.readiness,
            drain=self.drain,
        )
        self._drain_lock = asyncio.Lock()
        self._warm = asyncio.Event()
        self._warm_task: asyncio.Task[None] | None = None

    async def readiness(self) -> dict[str, bool]:
        checks = {"not_draining": not self.sip.draining, "warmed_up": self._warm.is_set()}
        if not self.config.echo:
            s = self.config
            vosk, piper, llama = await asyncio.gather(
                _reachable(s.vosk_url), _reachable(s.piper_url), _reachable(s.llama_url)
            )
            checks.update({"vosk": vosk, "piper": piper, "llama": llama})
        return checks

    async def start(self) -> None:
        c = self.config
        try:
            await self.http.start()
        except OSError as exc:
            raise OSError(f"HTTP port {c.http_host}:{c.http_port}: {exc.strerror or exc}") from exc
        try:
            await self.sip.start()
        except OSError as exc:
            await self.http.stop()
            raise OSError(f"SIP port udp {c.sip_host}:{c.sip_port}: {exc.strerror or exc}") from exc
        log.info(
            "bot listening",
            sip=f"{self.config.sip_host}:{self.sip.port}",
            http=self.http.port,
            advertised=self.calls.advertised,
            rtp=f"{self.config.rtp_port_min}-{self.config.rtp_port_max}",
            mode="echo" if self.config.echo else "assistant",
        )
        if self.config.echo:
            self._warm.set()
        else:
            self._warm_task = asyncio.create_task(self.warm_up(), name="llm-warm-up")

    async def warm_up(self) -> None:
        """Cache the calls' fixed prompt prefix; the bot is not ready until it is (or gave up)."""
        s = self.calls.settings
        llm = LlamaLLMService(
            base_url=s.llama_url, system_prompt=s.system_prompt, model=s.llm_model, max_tokens=s.max_tokens
        )
        try:
            for attempt in range(30):  # the sidecar may still be loading its model
                try:
                    await llm.warm_up(greeting=s.greeting)
                    break
                except Exception as exc:
                    if attempt == 0:
                        log.warning("llm warm-up failed; retrying", error=str(exc))
                    await asyncio.sleep(2.0)
        finally:
            with contextlib.suppress(Exception):
                await llm._client.close()  # the service is used outside a pipeline: close its HTTP pool
        self._warm.set()

    async def drain(self) -> None:
        """Stop taking calls; wait for live calls to end, up to the grace period; then end the rest."""
        async with self._drain_lock:
            self.sip.start_draining()
            log.info("draining", calls=len(self.calls.calls), grace=self.config.drain_grace_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.calls.idle.wait(), self.config.drain_grace_seconds)
            if self.calls.calls:
                log.warning("drain grace over; ending calls", calls=len(self.calls.calls))
                await self.calls.hangup_all()

    async def stop(self) -> None:
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
        await self.calls.hangup_all()
        with contextlib.suppress(TimeoutError):  # the SIP layer's on_ended tasks tear the calls down
            await asyncio.wait_for(self.calls.idle.wait(), 10.0)
        for active in list(self.calls.calls):
            await self.calls.ended(active, "shutdown")
        await self.sip.stop()
        await self.http.stop()
        await asyncio.to_thread(self.tracing.shutdown)


async def serve(config: BotConfig) -> int:
    server = BotServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    term = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, term.set)
    try:
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(term.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if term.is_set():  # Kubernetes: finish live calls within the grace period
            await server.drain()
    finally:
        await server.stop()
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ivrbot serve", description="Run the bot: SIP endpoint + one pipeline per call.")
    p.add_argument("--config", type=Path, help="YAML file (keys: docs/configuration.md); env IVRBOT_* wins")
    p.add_argument("--echo", action="store_true", help="echo caller audio instead of the assistant")
    a = p.parse_args(argv)
    try:
        config = load_config(a.config)
        if a.echo:
            from dataclasses import replace

            config = replace(config, echo=True)
        LatencyBudget.from_env()  # IVRBOT_BUDGET_*_MS: refuse a bad value now, not at the first call
    except (ConfigError, ValueError) as exc:
        print(f"ivrbot serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config))
    except OSError as exc:
        print(f"ivrbot serve: {exc}", file=sys.stderr)
        return 1
