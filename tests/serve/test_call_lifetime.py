"""Whatever ends a call, everything it took comes back: its RTP port pair and every asyncio task.

The real SIP shell on a real UDP socket, the real call manager and the real echo pipeline; the peer
is a phone on loopback sockets. Each end cause of the table runs one call and then checks the port
lease count and the set of live tasks against the baseline taken before the call. SIP timers are
shortened (T1 = 20 ms) so the timeouts (no ACK, an application that never decides) come in ~1.3 s.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivrbot.apology import ApologyAudio
from ivrbot.call_manager import CallLimits, CallManager
from ivrbot.call_pipeline import CallMedia, CallPipeline, pipeline_factory
from ivrbot.config import BotConfig
from ivrbot.echo import EchoPipeline
from ivrbot.metrics import Metrics
from ivrbot.sdp import SdpOffer, parse_offer
from ivrbot.sip.address import parse_name_addr
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import CallInfo, Reject
from ivrbot.sip.message import SipRequest, SipResponse, parse_message
from ivrbot.sip.server import SipServer
from ivrbot.sip.transaction import SipTimers
from ivrbot.sip.useragent import UaConfig, UserAgent
from ivrbot.telemetry.setup import Tracing, TracingConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sip"))
from sipmsg import request

TIMERS = SipTimers(t1=0.02, t2=0.16, t4=0.2)
SETTINGS = BotConfig().assistant_settings()
NO_APOLOGY = ApologyAudio(b"", 16000, "")


class Phone(asyncio.DatagramProtocol):
    """The caller: SIP on one socket (answers BYEs with 200 unless told not to), RTP sink on another."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.rtp: asyncio.DatagramTransport | None = None
        self.answer_bye = True
        self.byes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        msg = parse_message(data)
        if isinstance(msg, SipRequest) and msg.method == "BYE":
            self.byes += 1
            if self.answer_bye:
                resp = SipResponse(status=200, reason="OK")
                for v in msg.header_all("Via"):
                    resp.headers.add("Via", v)
                for n in ("From", "To", "Call-ID", "CSeq"):
                    resp.headers.add(n, msg.header(n) or "")
                self.send(resp.to_bytes(), (str(addr[0]), int(addr[1])))
            return
        self.inbox.put_nowait(msg)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    @property
    def via(self) -> str:
        assert self.transport is not None
        return f"127.0.0.1:{self.transport.get_extra_info('sockname')[1]}"

    @property
    def rtp_port(self) -> int:
        assert self.rtp is not None
        return int(self.rtp.get_extra_info("sockname")[1])

    async def response(self, status: int) -> SipResponse:
        while True:
            m = await asyncio.wait_for(self.inbox.get(), 10)
            if isinstance(m, SipResponse) and m.status == status:
                return m


@dataclass
class GatedApp:
    """The real call manager behind a gate: ``on_invite`` holds its Answer until the gate opens,
    so a CANCEL or the SIP core's application timeout lands on a fully set-up, unanswered call."""

    manager: CallManager
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_invite(self, call: SipCall, offer: SdpOffer) -> Answer | Reject:
        decision = await self.manager.on_invite(call, offer)
        await self.gate.wait()
        return decision


class CrashingEcho(EchoPipeline):
    """The echo pipeline with a bug: it dies as soon as it starts."""

    async def run(self) -> None:
        raise RuntimeError("pipeline bug")


@dataclass
class Rig:
    manager: CallManager
    app: GatedApp
    sip: SipServer
    phone: Phone
    crash: list[bool]
    #: every pipeline the factory made, weakly: a call's end must free its own
    made: list[weakref.ref[CallPipeline]] = field(default_factory=list)

    @property
    def to(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip.port)

    def offer(self) -> str:
        return (
            "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.phone.rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
        )

    def invite(self, call_id: str) -> None:
        # Record-Route: the bot's BYE goes to this phone, not to the (unroutable) Contact of sipmsg
        self.phone.send(request("INVITE", call_id=call_id, branch=f"z9hG4bK{call_id}", body=self.offer(),
                                via_host=self.phone.via, extra=[f"Record-Route: <sip:{self.phone.via};lr>"]),
                        self.to)

    def ack(self, call_id: str, to_tag: str, *, branch: str) -> None:
        self.phone.send(request("ACK", call_id=call_id, branch=branch, to_tag=to_tag, via_host=self.phone.via),
                        self.to)

    async def answered_call(self, call_id: str) -> str:
        """INVITE, 200 OK, ACK: the call is up; returns the bot's tag."""
        self.app.gate.set()
        self.invite(call_id)
        ok = await self.phone.response(200)
        tag = parse_name_addr(ok.header("To") or "").tag or ""
        self.ack(call_id, tag, branch=f"z9hG4bKack{call_id}")
        await _until(lambda: bool(self.manager.calls) and next(iter(self.manager.calls)).answered)
        return tag


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond`` (the state it reads has no event to wait on) until true, for at most ``timeout``."""
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    assert cond()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    base = random.randrange(30000, 60000, 2)
    config = BotConfig(sip_host="127.0.0.1", advertised_address="127.0.0.1", rtp_port_min=base,
                       rtp_port_max=base + 20, echo=True)
    crash = [False]
    echo = pipeline_factory(echo=True, settings=SETTINGS, apology=NO_APOLOGY, tracing=False)

    made: list[weakref.ref[CallPipeline]] = []

    def pipelines(media: CallMedia) -> CallPipeline:
        pipeline = CrashingEcho(media.transport) if crash[0] else echo(media)
        made.append(weakref.ref(pipeline))
        return pipeline

    manager = CallManager(CallLimits.from_config(config, "127.0.0.1"), pipelines, metrics=Metrics(),
                          tracing=Tracing(TracingConfig(), None))
    app = GatedApp(manager)
    sip = SipServer("127.0.0.1", 0, app, advertised_address="127.0.0.1", timers=TIMERS)
    await sip.start()
    loop = asyncio.get_running_loop()
    phone = Phone()
    await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
    phone.rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        yield Rig(manager, app, sip, phone, crash, made)
    finally:
        app.gate.set()
        await manager.stop(grace=1.0)
        await sip.stop()
        for t in (phone.transport, phone.rtp):
            if t is not None:
                t.close()


async def _bye(rig: Rig) -> None:
    tag = await rig.answered_call("c-bye")
    # The caller talks: one RTP packet to the port of the bot's answer (the only call's session).
    bot_port = next(iter(rig.manager.calls)).session.local_port
    assert rig.phone.rtp is not None
    rig.phone.rtp.sendto(bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7]) + b"\xff" * 160, ("127.0.0.1", bot_port))
    await _until(lambda: _transport_events(rig)["rtp_started"] == 1)
    rig.phone.send(request("BYE", call_id="c-bye", cseq=2, branch="z9hG4bKbye", to_tag=tag,
                           via_host=rig.phone.via), rig.to)
    await rig.phone.response(200)


async def _cancel(rig: Rig) -> None:
    rig.invite("c-cancel")
    await _until(lambda: len(rig.manager.calls) == 1)  # media and pipeline up, Answer held at the gate
    rig.phone.send(request("CANCEL", call_id="c-cancel", branch="z9hG4bKc-cancel", via_host=rig.phone.via),
                   rig.to)
    final = await rig.phone.response(487)
    rig.ack("c-cancel", parse_name_addr(final.header("To") or "").tag or "", branch="z9hG4bKc-cancel")
    rig.app.gate.set()


async def _ack_timeout(rig: Rig) -> None:
    rig.app.gate.set()
    rig.invite("c-noack")
    await rig.phone.response(200)  # and never an ACK: the bot gives up after 64*T1 and sends BYE
    await _until(lambda: rig.phone.byes > 0)


async def _pipeline_crash(rig: Rig) -> None:
    rig.crash[0] = True
    rig.app.gate.set()
    rig.invite("c-crash")
    await rig.phone.response(200)
    await _until(lambda: rig.phone.byes > 0)  # the bot hangs up the call whose pipeline died


async def _app_timeout(rig: Rig) -> None:
    rig.invite("c-slow")
    final = await rig.phone.response(500)  # the application did not decide within 64*T1
    rig.ack("c-slow", parse_name_addr(final.header("To") or "").tag or "", branch="z9hG4bKc-slow")
    rig.app.gate.set()  # ... and answers after all, too late


async def _shutdown(rig: Rig) -> None:
    await rig.answered_call("c-shutdown")
    rig.phone.answer_bye = False  # the peer is gone: the BYE is never answered
    await rig.manager.stop(grace=0.3)  # what BotServer.stop() does, in its order
    await rig.sip.stop()


END_CAUSES = {
    "bye": _bye,
    "cancel": _cancel,
    "ack_timeout": _ack_timeout,
    "pipeline_crash": _pipeline_crash,
    "app_timeout": _app_timeout,
    "shutdown": _shutdown,
}


def _transport_events(rig: Rig) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(rig.manager.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "ivrbot_call_transport_events_total":
                out[sample.labels["event"]] = sample.value
    return out


@pytest.mark.parametrize("cause", list(END_CAUSES))
async def test_every_end_returns_ports_and_tasks(rig: Rig, cause: str) -> None:
    baseline = set(asyncio.all_tasks())
    await END_CAUSES[cause](rig)
    # Bounded waits for the release, then exact equality: nothing of the call outlives it.
    await _until(lambda: not rig.manager.calls and rig.manager.ports.in_use == 0)
    await _until(lambda: set(asyncio.all_tasks()) <= baseline)
    await asyncio.sleep(0.1)  # nothing comes back late either
    assert rig.manager.ports.in_use == 0
    assert rig.manager.idle.is_set()
    assert rig.sip.call(f"c-{cause}") is None
    assert set(asyncio.all_tasks()) <= baseline  # shutdown also ends the SIP shell's timer task
    assert set(asyncio.all_tasks()) == baseline or cause == "shutdown"
    events = _transport_events(rig)
    assert events["participant_left"] == 1  # every end, whatever its cause
    if cause == "bye":  # each of the transport's events has its listener: counted on /metrics
        assert events == {"participant_joined": 1, "rtp_started": 1, "participant_left": 1, "error": 0}


async def test_an_ended_call_is_freed_without_waiting_for_the_collector(rig: Rig) -> None:
    """A call's objects are a web of cycles; left to the collector's own schedule they piled up
    (107 MB between full collections in the soak). The call's end collects them itself."""
    gc.collect()
    gc.disable()
    try:
        await _bye(rig)
        await _until(lambda: not rig.manager.calls and rig.manager.idle.is_set())
        assert rig.made, "the call had a pipeline"
        await _until(lambda: all(ref() is None for ref in rig.made))
    finally:
        gc.enable()


def _handle(call_id: str) -> SipCall:
    info = CallInfo(call_id, "sip:a@127.0.0.1", "f", "sip:bot@127.0.0.1", "t", "sip:bot@127.0.0.1",
                    ("127.0.0.1", 5060), ())
    return SipCall(info, UserAgent(UaConfig(advertised_address="127.0.0.1", advertised_port=5060)), lambda: None)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("echo", [True, False], ids=["echo", "assistant"])
async def test_call_ended_before_its_pipeline_started_leaves_no_coroutine(echo: bool) -> None:
    """A call whose end is handled before its task first ran (CANCEL, shutdown) leaves no
    never-awaited pipeline coroutine behind."""
    base = random.randrange(30000, 60000, 2)
    config = BotConfig(sip_host="127.0.0.1", advertised_address="127.0.0.1", rtp_port_min=base,
                       rtp_port_max=base + 4, echo=echo)
    pipelines = pipeline_factory(echo=echo, settings=SETTINGS, apology=NO_APOLOGY, tracing=False)
    manager = CallManager(CallLimits.from_config(config, "127.0.0.1"), pipelines, metrics=Metrics(),
                          tracing=Tracing(TracingConfig(), None))
    offer = parse_offer(
        "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = await manager.on_invite(_handle("early-end"), offer)
        assert isinstance(answer, Answer)
        await answer.handler.on_ended("cancelled")  # no await in between: the call's task never ran
        gc.collect()
    never_awaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert never_awaited == []
    assert manager.ports.in_use == 0 and not manager.calls
