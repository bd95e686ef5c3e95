"""Media round trip over real UDP: phone -> RtpSession -> OpenSIPSTransport -> echo pipeline
(real PipelineWorker) -> paced sender -> phone. Delays are measured in packets, never in wall time."""

import asyncio
import itertools
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
from pipecat.frames.frames import InputDTMFFrame, InterruptionFrame, OutputAudioRawFrame

from ivrbot.echo import build_echo_worker
from ivrbot.rtp.dtmf import key_press_payloads
from ivrbot.rtp.packet import RtpPacket
from ivrbot.rtp.session import RtpSession
from ivrbot.transport import OpenSIPSTransport
from transport.phone import FrameRecorder, Phone, RunningWorker, port_pool, until

FRAMES = 56
SILENCE = b"\xff" * 160
SSRC = 0x1234


def code(k: int) -> int:
    """Frame k is 20 ms of one constant mu-law code; codes two apart survive decode/resample/encode."""
    return 0xF0 - 2 * k


def identify(c: int) -> int | None:
    if not code(FRAMES - 1) - 1 <= c <= code(0) + 1:
        return None
    return round((0xF0 - c) / 2)


@dataclass
class Call:
    phone: Phone
    session: RtpSession
    transport: OpenSIPSTransport
    recorder: FrameRecorder
    running: RunningWorker
    events: list[tuple[str, str]]

    @property
    def dest(self) -> tuple[str, int]:
        return ("127.0.0.1", self.session.local_port)


@pytest.fixture
async def call(request: pytest.FixtureRequest) -> AsyncIterator[Call]:
    phone = await Phone.open()
    pool = port_pool()
    options = getattr(request, "param", {})
    session = RtpSession(pool.allocate(), phone.addr, call_id="echo-1", dtmf_payload_type=101, **options)
    transport = OpenSIPSTransport(session, "echo-1")
    events: list[tuple[str, str]] = []

    async def rtp_started(t: OpenSIPSTransport, call_id: str) -> None:
        events.append(("rtp_started", call_id))

    async def left(t: OpenSIPSTransport, call_id: str, reason: str) -> None:
        events.append(("left", reason))

    transport.add_event_handler("on_rtp_started", rtp_started)
    transport.add_event_handler("on_participant_left", left)

    recorder = FrameRecorder(InputDTMFFrame)
    running = RunningWorker(build_echo_worker(transport, observers=[recorder]))
    await running.start()
    yield Call(phone, session, transport, recorder, running, events)
    await running.stop()
    phone.close()
    assert pool.in_use == 0, "the RTP port pair must go back to the pool when the pipeline ends"


def pkt(seq: int, payload: bytes, pt: int = 0, marker: bool = False, ts: int | None = None) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, (seq * 160 if ts is None else ts) & 0xFFFFFFFF, SSRC, payload, marker).to_bytes()


async def test_echo_in_order_with_steady_delay_despite_reorder_duplicates_and_loss(call: Call) -> None:
    base = 65500  # the stream's sequence numbers wrap during the frames
    lead, tail = 15, 40
    seqs = [base + i for i in range(lead + FRAMES + tail)]
    payload = {base + i: SILENCE for i in range(lead + FRAMES + tail)}
    for k in range(FRAMES):
        payload[base + lead + k] = bytes([code(k)]) * 160
    sends: list[list[int]] = [[s] for s in seqs]
    f = lead  # index of frame 0
    # network impairments: adjacent swaps, an immediate and a late duplicate, two losses
    for k in (10, 33):
        sends[f + k], sends[f + k + 1] = sends[f + k + 1], sends[f + k]
    sends[f + 20].append(base + f + 20)
    sends[f + 42].append(base + f + 40)
    dropped = {25, 47}
    for k in dropped:
        sends[f + k] = []
    sent_tick = {k: f + k for k in range(FRAMES)}
    await call.phone.play(call.dest, [[pkt(s, payload[s]) for s in batch] for batch in sends])

    heard = sorted(call.phone.heard, key=lambda h: h.packet.sequence + (65536 if h.packet.sequence < 30000 else 0))
    stream = b"".join(h.packet.payload for h in heard)
    ticks = [h.tick for h in heard for _ in range(160)]
    runs: list[tuple[int, int, int]] = []  # (k, start sample, length)
    i = 0
    while i < len(stream):
        frame = identify(stream[i])
        j = i
        while j < len(stream) and identify(stream[j]) == frame:
            j += 1
        if frame is not None and j - i >= 60:
            runs.append((frame, i, j - i))
        i = j

    expected = [k for k in range(FRAMES) if k not in dropped]
    assert [k for k, _, _ in runs] == expected, "every frame heard once, in order, lost ones missing"
    assert all(length <= 200 for _, _, length in runs), "a duplicate must not be played twice"
    offsets = [start - 160 * k for k, start, _ in runs]
    # the same position in the stream for every frame (+-2 samples of plateau detection), allowing at
    # most a few 20 ms re-primes of the jitter buffer if this shared machine stalls the sender
    assert all(b - a >= -2 for a, b in itertools.pairwise(offsets)), offsets
    assert max(offsets) - min(offsets) <= 3 * 160 + 2, "no drift or growing delay"
    delays = [ticks[start] - sent_tick[k] for k, start, _ in runs]
    assert 2 <= statistics.median(delays) <= 15, delays  # jitter depth + pipeline + send queue, in packets

    c = call.session.counters
    assert c.lost >= len(dropped) and c.duplicate + c.late >= 2 and c.resyncs == 0
    assert ("rtp_started", "echo-1") in call.events


async def test_dtmf_presses_arrive_once_each_as_pipecat_frames(call: Call) -> None:
    schedule: list[list[bytes]] = [[pkt(i, SILENCE)] for i in range(5)]
    seq = 5
    for n, key in enumerate("19#"):
        ts = 100000 + n * 8000
        for marker, payload in key_press_payloads(key):
            schedule.append([pkt(seq, payload, pt=101, marker=marker, ts=ts)])
            seq += 1
        schedule.append([pkt(seq, SILENCE)])
        seq += 1
    schedule += [[]] * 10
    await call.phone.play(call.dest, schedule)
    await until(lambda: len(call.recorder.frames) >= 3)
    await asyncio.sleep(0.1)
    assert [f.button.value for f in call.recorder.frames if isinstance(f, InputDTMFFrame)] == ["1", "9", "#"]


# A 1 s send queue makes "dropped" unmistakable: without the clear, 50 more speech packets would follow.
@pytest.mark.parametrize("call", [{"send_queue_ms": 1000}], indirect=True)
async def test_interruption_drops_queued_reply_within_a_packet_or_two(call: Call) -> None:
    reply = (np.ones(16000 * 3) * 6000).astype("<i2").tobytes()  # 3 s at 16 kHz
    await call.running.worker.queue_frame(OutputAudioRawFrame(audio=reply, sample_rate=16000, num_channels=1))

    def speech(since: int = 0) -> list[RtpPacket]:
        return [h.packet for h in call.phone.heard[since:] if h.packet.payload != SILENCE]

    await until(lambda: len(speech()) >= 10 and call.session.queued_packets >= 40)
    interrupted_at = len(call.phone.heard)
    await call.running.worker.queue_frame(InterruptionFrame())
    await until(lambda: call.phone.heard[-1].packet.payload == SILENCE)
    at_silence = len(call.phone.heard)
    # keep listening for a while (counted in packets) and make sure the rest of the reply never plays
    await until(lambda: len(call.phone.heard) >= at_silence + 50)
    assert len(speech(interrupted_at)) <= 5, "queued speech must be dropped, not played out"
    assert all(h.packet.payload == SILENCE for h in call.phone.heard[at_silence:])
    spoken = speech()
    assert spoken[0].marker and not any(p.marker for p in spoken[1:])
    pkts = [h.packet for h in call.phone.heard]
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(pkts))
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(pkts))


async def test_participant_events_carry_the_call_identity(call: Call) -> None:
    joined: list[tuple[str, dict[str, str]]] = []

    async def on_joined(t: OpenSIPSTransport, call_id: str, who: dict[str, str]) -> None:
        joined.append((call_id, who))

    call.transport.add_event_handler("on_participant_joined", on_joined)

    await call.transport.participant_joined({"from": "sip:alice@example.com"})
    await call.transport.participant_left("bye")
    await asyncio.sleep(0.05)
    assert joined == [("echo-1", {"from": "sip:alice@example.com"})]
    assert ("left", "bye") in call.events
