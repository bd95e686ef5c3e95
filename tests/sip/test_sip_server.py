"""The asyncio shell over real UDP sockets: slow applications, CANCEL races, hangup, transfer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sipmsg import ANSWER, OFFER, request

from ivrbot.sdp import SdpOffer
from ivrbot.sip.address import parse_name_addr
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import Accept, Decision, Reject
from ivrbot.sip.message import SipRequest, SipResponse, parse_message
from ivrbot.sip.server import SipServer


class Peer(asyncio.DatagramProtocol):
    """A phone/proxy on a real UDP socket: sends requests, queues what it receives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.inbox.put_nowait(parse_message(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, server: SipServer) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", server.port))

    async def next(self) -> SipRequest | SipResponse:
        return await asyncio.wait_for(self.inbox.get(), 10)

    async def next_response(self, status: int) -> SipResponse:
        while True:
            m = await self.next()
            if isinstance(m, SipResponse) and m.status == status:
                return m

    async def next_request(self, method: str) -> SipRequest:
        while True:
            m = await self.next()
            if isinstance(m, SipRequest) and m.method == method:
                return m


@dataclass
class SlowApp:
    release: asyncio.Event = field(default_factory=asyncio.Event)
    decision: Decision = field(default_factory=lambda: Accept(ANSWER))
    invited: list[str] = field(default_factory=list)
    established: list[str] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    fail: bool = False

    async def on_invite(self, call: SipCall, offer: SdpOffer) -> Answer | Reject:
        self.invited.append(call.call_id)
        if self.fail:
            raise RuntimeError("application bug")
        await self.release.wait()
        if isinstance(self.decision, Reject):
            return self.decision
        return Answer(self.decision.answer_sdp, _Handler(self, call.call_id))


@dataclass
class _Handler:
    app: SlowApp
    call_id: str

    async def on_answered(self) -> None:
        self.app.answered.append(self.call_id)

    async def on_established(self) -> None:
        self.app.established.append(self.call_id)

    async def on_reinvite(self, offer: SdpOffer) -> Decision:
        return Reject(488)

    async def on_ended(self, reason: str) -> None:
        self.app.ended.append((self.call_id, reason))


@pytest.fixture
async def rig() -> AsyncIterator[tuple[SipServer, SlowApp, Peer]]:
    app = SlowApp()
    server = SipServer("127.0.0.1", 0, app, advertised_address="127.0.0.1")
    await server.start()
    loop = asyncio.get_running_loop()
    peer = Peer()
    await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    try:
        yield server, app, peer
    finally:
        assert peer.transport is not None
        peer.transport.close()
        await server.stop()


def _invite(peer: Peer, **kw: object) -> bytes:
    rr = [f"Record-Route: <sip:127.0.0.1:{peer.port};lr>"]
    return request("INVITE", body=OFFER, via_host=f"127.0.0.1:{peer.port}", extra=rr, **kw)  # type: ignore[arg-type]


async def _wait(cond: object) -> None:
    assert callable(cond)
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.02)


async def test_slow_application_cancel_race(rig: tuple[SipServer, SlowApp, Peer]) -> None:
    server, app, peer = rig
    peer.send(_invite(peer), server)
    await peer.next_response(100)  # sent while on_invite is still waiting
    peer.send(request("OPTIONS", branch="z9hG4bKopt", call_id="o1", via_host=f"127.0.0.1:{peer.port}"), server)
    await peer.next_response(200)  # the socket keeps serving meanwhile
    peer.send(request("CANCEL", via_host=f"127.0.0.1:{peer.port}"), server)
    got = {(await peer.next()).status for _ in range(2)}  # type: ignore[union-attr]
    assert got == {200, 487}
    app.release.set()
    await _wait(lambda: app.ended)
    assert app.ended == [("call-1", "cancelled")]
    assert app.established == []
    assert app.answered == []  # the Accept came too late: no 200 OK, not an answered call
    await asyncio.sleep(0.1)
    late = [peer.inbox.get_nowait() for _ in range(peer.inbox.qsize())]
    assert not [m for m in late if isinstance(m, SipResponse) and m.status == 200]


async def test_hangup_sends_bye_along_route_and_waits(rig: tuple[SipServer, SlowApp, Peer]) -> None:
    server, app, peer = rig
    app.release.set()
    peer.send(_invite(peer), server)
    ok = await peer.next_response(200)
    tag = parse_name_addr(ok.header("To") or "").tag
    peer.send(request("ACK", branch="z9hG4bKack", to_tag=tag, via_host=f"127.0.0.1:{peer.port}"), server)
    await _wait(lambda: app.established)
    assert app.answered == ["call-1"]
    call = server.call("call-1")
    assert call is not None
    hangup = asyncio.create_task(call.hangup())
    bye = await peer.next_request("BYE")  # arrived at the Record-Route address: this peer
    assert bye.header_all("Route") == [f"<sip:127.0.0.1:{peer.port};lr>"]
    assert not hangup.done()
    resp = SipResponse(status=200, reason="OK")
    for v in bye.header_all("Via"):
        resp.headers.add("Via", v)
    for n in ("From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, bye.header(n) or "")
    peer.send(resp.to_bytes(), server)
    assert await asyncio.wait_for(hangup, 10) is True
    await _wait(lambda: app.ended)
    assert app.ended == [("call-1", "local_bye")]
    assert server.call("call-1") is None  # the slot left with the call
    assert await call.hangup() is False


async def test_transfer_follows_notify(rig: tuple[SipServer, SlowApp, Peer]) -> None:
    server, app, peer = rig
    app.release.set()
    peer.send(_invite(peer), server)
    ok = await peer.next_response(200)
    tag = parse_name_addr(ok.header("To") or "").tag
    assert tag
    peer.send(request("ACK", branch="z9hG4bKack", to_tag=tag, via_host=f"127.0.0.1:{peer.port}"), server)
    await _wait(lambda: app.established)
    call = server.call("call-1")
    assert call is not None
    result = asyncio.create_task(call.transfer("sip:agent@10.0.0.50", timeout=10))
    refer = await peer.next_request("REFER")
    assert refer.header("Refer-To") == "<sip:agent@10.0.0.50>"
    resp = SipResponse(status=202, reason="Accepted")
    for v in refer.header_all("Via"):
        resp.headers.add("Via", v)
    for n in ("From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, refer.header(n) or "")
    peer.send(resp.to_bytes(), server)
    notify = request(
        "NOTIFY", cseq=2, branch="z9hG4bKn2", to_tag=tag, body="SIP/2.0 200 OK\r\n",
        content_type="message/sipfrag;version=2.0", via_host=f"127.0.0.1:{peer.port}",
        extra=["Event: refer", "Subscription-State: terminated;reason=noresource"],
    )
    peer.send(notify, server)
    assert await asyncio.wait_for(result, 10) is True
    assert (await peer.next_response(200)).header("CSeq") == "2 NOTIFY"


async def test_application_error_is_500_and_no_on_ended(rig: tuple[SipServer, SlowApp, Peer]) -> None:
    server, app, peer = rig
    app.fail = True
    peer.send(_invite(peer), server)
    await peer.next_response(500)
    await asyncio.sleep(0.1)
    assert app.ended == []
    assert server.active_calls == 0
