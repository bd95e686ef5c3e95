"""sipp test fixtures: the SIP target under test, and a sipp runner.

``sip_target`` starts the bot's ``SipServer`` with a small in-test application whose SDP answer
points at a real UDP socket that receives and counts RTP. To run the same scenarios against a
running bot instead, set ``IVRBOT_SIPP_TARGET=host:port`` (and ``IVRBOT_SIPP_MAX_CALLS`` to its
call limit); observations that need the in-test application are then skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sipp_runner import SCENARIOS, SippResult, free_udp_port, run_sipp

from ivrbot.sdp import MediaParams, SdpOffer, build_answer
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import Accept, CallInfo, Decision, Reject
from ivrbot.sip.server import SipServer

__all__ = ["SCENARIOS", "SipTarget", "SippResult", "TestApplication", "free_udp_port", "run_sipp"]

DTMF_CHARS = "0123456789*#ABCD"

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")


class RtpSink(asyncio.DatagramProtocol):
    """Receives a call's RTP: counts packets per payload type, decodes RFC 4733 key presses."""

    def __init__(self, dtmf_pt: int | None) -> None:
        self.dtmf_pt = dtmf_pt
        self.counts: dict[int, int] = {}
        self.audio_seqs: list[int] = []
        self.digits: list[str] = []
        self._dtmf_seen: set[int] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        cc = data[0] & 0x0F
        pt = data[1] & 0x7F
        seq, ts = struct.unpack("!HI", data[2:8])
        off = 12 + 4 * cc
        if data[0] & 0x10 and len(data) >= off + 4:
            off += 4 + 4 * struct.unpack("!H", data[off + 2 : off + 4])[0]
        self.counts[pt] = self.counts.get(pt, 0) + 1
        if pt == 0:
            self.audio_seqs.append(seq)
        elif pt == self.dtmf_pt and len(data) >= off + 4:
            event, flags = data[off], data[off + 1]
            if flags & 0x80 and ts not in self._dtmf_seen and event < len(DTMF_CHARS):
                self._dtmf_seen.add(ts)
                self.digits.append(DTMF_CHARS[event])


@dataclass
class TestApplication:
    """The CallApplication the sipp tests drive: a call limit, an optional answer delay."""

    max_calls: int = 2
    active: set[str] = field(default_factory=set)
    sinks: dict[str, RtpSink] = field(default_factory=dict)
    finished: dict[str, RtpSink] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    established: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    headers: dict[str, CallInfo] = field(default_factory=dict)
    reinvites: list[MediaParams] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    async def on_invite(self, call: SipCall, offer: SdpOffer) -> Answer | Reject:
        self.headers[call.call_id] = call.info
        if len(self.active) >= self.max_calls:
            self.rejected += 1
            return Reject(486, "Busy Here", retry_after=5)
        self.active.add(call.call_id)
        delay = float(call.info.header("X-Test-Answer-Delay") or 0)
        if delay:
            await asyncio.sleep(delay)
        sink = RtpSink(offer.media.dtmf_pt)
        await sink.start()
        self.sinks[call.call_id] = sink
        self.accepted += 1
        answer = build_answer(
            offer.media, address="127.0.0.1", port=sink.port, session_id=next(self._ids),
            session_version=1, allow_loopback=True,
        )
        return Answer(answer, _TestCall(self, call.call_id))


@dataclass
class _TestCall:
    """One accepted call of the TestApplication: the SIP shell's handler of its events."""

    app: TestApplication
    call_id: str

    async def on_answered(self) -> None:
        pass

    async def on_established(self) -> None:
        self.app.established.append(self.call_id)

    async def on_reinvite(self, offer: SdpOffer) -> Decision:
        app = self.app
        sink = app.sinks[self.call_id]
        app.reinvites.append(offer.media)
        answer = build_answer(
            offer.media, address="127.0.0.1", port=sink.port, session_id=1,
            session_version=len(app.reinvites) + 1, allow_loopback=True,
        )
        return Accept(answer)

    async def on_ended(self, reason: str) -> None:
        app = self.app
        app.ended[self.call_id] = reason
        app.active.discard(self.call_id)
        sink = app.sinks.pop(self.call_id, None)
        if sink is not None:
            sink.stop()
            app.finished[self.call_id] = sink


@dataclass
class SipTarget:
    host: str
    port: int
    max_calls: int
    app: TestApplication | None
    server: SipServer | None


@pytest.fixture
async def sip_target() -> AsyncIterator[SipTarget]:
    external = os.environ.get("IVRBOT_SIPP_TARGET")
    if external:
        host, _, port = external.rpartition(":")
        yield SipTarget(host, int(port), int(os.environ.get("IVRBOT_SIPP_MAX_CALLS", "2")), None, None)
        return
    app = TestApplication(max_calls=2)
    # The advertised address is what goes into Contact; loopback only because this is a local test.
    server = SipServer("127.0.0.1", 0, app, advertised_address="127.0.0.1")
    await server.start()
    try:
        yield SipTarget("127.0.0.1", server.port, app.max_calls, app, server)
    finally:
        await server.stop()
        for sink in app.sinks.values():
            sink.stop()
