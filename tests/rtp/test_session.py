"""RtpSession over real loopback UDP (no Pipecat)."""

import asyncio
import itertools
import random
import socket
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from ivrbot.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from ivrbot.rtp.dtmf import key_press_payloads
from ivrbot.rtp.packet import RtpPacket, parse_rtp
from ivrbot.rtp.ports import PortPool
from ivrbot.rtp.session import MediaDirection, RtpSession


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - the condition is set by datagram callbacks, not an Event
            await asyncio.sleep(0.005)


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[RtpPacket] = []
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.append(parse_rtp(data))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        a = self.transport.get_extra_info("sockname")
        return a[0], a[1]

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))


async def open_peer() -> Peer:
    peer = Peer()
    t, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    peer.transport = t
    return peer


@pytest.fixture
async def call() -> AsyncIterator[tuple[RtpSession, Peer, PortPool]]:
    base = random.randrange(30000, 60000, 2)
    pool = PortPool(base, base + 7, host="127.0.0.1")
    peer = await open_peer()
    session = RtpSession(pool.allocate(), peer.addr, call_id="t", dtmf_payload_type=101)
    await session.start()
    yield session, peer, pool
    await session.stop()
    assert peer.transport is not None
    peer.transport.close()


def pcmu(seq: int, payload: bytes, ssrc: int = 9, pt: int = 0, marker: bool = False, ts: int | None = None) -> bytes:
    return RtpPacket(pt, seq, seq * 160 if ts is None else ts, ssrc, payload, marker=marker).to_bytes()


async def test_sends_comfort_silence_continuously_from_the_start(call: tuple[RtpSession, Peer, PortPool]) -> None:
    _, peer, _ = call
    await until(lambda: len(peer.got) >= 10)
    pkts = peer.got[:10]
    assert all(p.payload == b"\xff" * 160 and p.payload_type == 0 and not p.marker for p in pkts)
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == list(range(10))
    assert [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts] == [160 * i for i in range(10)]


async def test_decodes_caller_audio_and_ignores_foreign_malformed_and_unknown_pt(
    call: tuple[RtpSession, Peer, PortPool],
) -> None:
    session, peer, _ = call
    first: list[bool] = []
    also: list[str] = []
    session.listen(first_packet=lambda: first.append(True))
    session.listen(first_packet=lambda: also.append("second owner"))  # adds, never replaces
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    tone = (np.sin(np.arange(160) / 3) * 8000).astype("<i2").tobytes()
    stranger.sendto(pcmu(1, pcm_to_ulaw(tone)), ("127.0.0.1", session.local_port))
    stranger.close()
    peer.send(b"\x00garbage", session.local_port)
    peer.send(pcmu(2, b"\x00" * 160, pt=8), session.local_port)
    for seq in range(3, 9):
        peer.send(pcmu(seq, pcm_to_ulaw(tone)), session.local_port)
    frame = b""
    async with asyncio.timeout(10):
        while not any(frame):
            frame = await session.read_frame()
    assert len(frame) == 320
    assert np.abs(np.frombuffer(frame, "<i2").astype(int) - np.frombuffer(tone, "<i2")).max() < 300
    await until(lambda: session.counters.foreign_source == 1)
    c = session.counters
    assert (c.malformed, c.unknown_payload_type, c.received) == (1, 1, 6)
    assert first == [True]
    assert also == ["second owner"]


async def test_dtmf_press_delivered_once(call: tuple[RtpSession, Peer, PortPool]) -> None:
    session, peer, _ = call
    for i, (marker, payload) in enumerate(key_press_payloads("7")):
        peer.send(pcmu(100 + i, payload, pt=101, marker=marker, ts=5000), session.local_port)
    for i, (marker, payload) in enumerate(key_press_payloads("#")):
        peer.send(pcmu(200 + i, payload, pt=101, marker=marker, ts=9000), session.local_port)
    async with asyncio.timeout(10):
        keys = [await session.read_dtmf(), await session.read_dtmf()]
    assert keys == ["7", "#"]
    await asyncio.sleep(0.1)
    assert session.counters.dtmf_events == 2


async def test_speech_gets_marker_and_hook_then_clear_returns_to_silence(
    call: tuple[RtpSession, Peer, PortPool],
) -> None:
    session, peer, _ = call
    sent: list[int] = []
    sent_too: list[int] = []
    session.listen(spurt_sent=sent.append)
    session.listen(spurt_sent=sent_too.append)
    speech = (np.ones(160 * 30) * 5000).astype("<i2").tobytes()
    writer = asyncio.create_task(session.write_pcm(speech))
    await until(lambda: any(p.payload[0] != 0xFF for p in peer.got))
    session.clear()
    await writer
    n = len(peer.got)
    await until(lambda: len(peer.got) >= n + 5)
    speech_pkts = [p for p in peer.got if p.payload[0] != 0xFF]
    assert speech_pkts[0].marker and sent == [speech_pkts[0].sequence] == sent_too
    assert len(speech_pkts) < 30  # the rest was dropped by clear()
    assert all(p.payload == b"\xff" * 160 for p in peer.got[n + 1 :])


async def test_write_pcm_applies_back_pressure(call: tuple[RtpSession, Peer, PortPool]) -> None:
    session, _, _ = call
    writer = asyncio.create_task(session.write_pcm(bytes(320 * 50)))
    await asyncio.sleep(0.05)
    assert not writer.done() and session.queued_packets <= 5
    session.clear()
    await writer


async def test_hold_stops_sending_and_resume_continues_timestamps(call: tuple[RtpSession, Peer, PortPool]) -> None:
    session, peer, _ = call
    await until(lambda: len(peer.got) >= 3)
    session.update_remote(peer.addr, MediaDirection.RECVONLY)
    await asyncio.sleep(0.05)
    held_at = len(peer.got)
    await asyncio.sleep(0.2)
    assert len(peer.got) <= held_at + 1
    session.update_remote(peer.addr, MediaDirection.SENDRECV)
    await until(lambda: len(peer.got) > held_at + 3)
    pairs = list(zip(peer.got, peer.got[1:], strict=False))
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in pairs)  # no sequence gap for the hold
    assert max((b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairs) >= 160 * 5  # time ran on


async def test_stop_returns_the_ports_and_is_idempotent() -> None:
    base = random.randrange(30000, 60000, 2)
    pool = PortPool(base, base + 3, host="127.0.0.1")
    s = RtpSession(pool.allocate(), ("127.0.0.1", 9), call_id="x")
    await s.stop()  # never started
    assert pool.in_use == 0
    s2 = RtpSession(pool.allocate(), ("127.0.0.1", 9), call_id="y")
    await s2.start()
    await s2.stop()
    await s2.stop()
    assert pool.in_use == 0


async def test_peer_30ms_packets_are_reframed_into_continuous_20ms_frames(
    call: tuple[RtpSession, Peer, PortPool],
) -> None:
    session, peer, _ = call
    codes = [0x90 + 3 * i for i in range(8)]  # one distinct level per 30 ms packet (a burst within max_depth)
    for i, c in enumerate(codes):
        peer.send(pcmu(i, bytes([c]) * 240, ts=i * 240), session.local_port)
    audio = b""
    async with asyncio.timeout(10):
        while audio.rstrip(b"\x00") == audio or not audio.strip(b"\x00"):
            audio += await session.read_frame()
    assert all(len(f) == 320 for f in [audio[i : i + 320] for i in range(0, len(audio), 320)])
    speech = audio.strip(b"\x00")
    expected = ulaw_to_pcm(b"".join(bytes([c]) * 240 for c in codes))
    assert speech == expected.strip(b"\x00")
    assert session.counters.lost == 0 and session.counters.received == 8


async def test_sends_at_the_negotiated_ptime() -> None:
    base = random.randrange(30000, 60000, 2)
    pool = PortPool(base, base + 3, host="127.0.0.1")
    peer = await open_peer()
    session = RtpSession(pool.allocate(), peer.addr, call_id="p30", ptime_ms=30)
    await session.start()
    try:
        await session.write_pcm((np.ones(240 * 3) * 3000).astype("<i2").tobytes())
        await until(lambda: len(peer.got) >= 8)
    finally:
        await session.stop()
        assert peer.transport is not None
        peer.transport.close()
    assert {len(p.payload) for p in peer.got} == {240}
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 240 for a, b in itertools.pairwise(peer.got))
    assert sum(p.payload != b"\xff" * 240 for p in peer.got) == 3
    with pytest.raises(ValueError):
        RtpSession(pool.allocate(), None, ptime_ms=25)
