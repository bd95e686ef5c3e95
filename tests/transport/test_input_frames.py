"""Caller audio enters the pipeline in ``input_frame_ms`` frames (real UDP, RtpSession, echo worker),
every sample once and in order, while the wire keeps 20 ms packets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame

from ivrbot.echo import build_echo_worker
from ivrbot.rtp.packet import RtpPacket
from ivrbot.rtp.session import RtpSession
from ivrbot.transport import OpenSIPSTransport
from transport.phone import FrameRecorder, Phone, RunningWorker, port_pool, until

RATE = 16000  # the echo pipeline's input rate


def ramp_packets(n: int) -> list[list[bytes]]:
    """Packet k carries one constant mu-law code, different for every packet."""
    return [[RtpPacket(0, k, k * 160, 0x77, bytes([0xF0 - (k % 60)]) * 160).to_bytes()] for k in range(n)]


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
async def test_input_frames_have_the_configured_length_and_nothing_is_lost(frame_ms: int) -> None:
    phone = await Phone.open()
    pool = port_pool()
    session = RtpSession(pool.allocate(), phone.addr, call_id="frames-1")
    transport = OpenSIPSTransport(session, "frames-1", input_frame_ms=frame_ms)
    recorder = FrameRecorder(InputAudioRawFrame)
    running = RunningWorker(build_echo_worker(transport, observers=[recorder]))
    await running.start()
    try:
        packets = 60
        await phone.play(("127.0.0.1", session.local_port), ramp_packets(packets))
        want = packets * 640 - 3 * 2 * RATE * frame_ms // 1000
        await until(lambda: sum(len(f.audio) for f in recorder.frames) >= want)
        await until(lambda: len(phone.heard) >= packets)
    finally:
        await running.stop()
        phone.close()
    frames = [f for f in recorder.frames if isinstance(f, InputAudioRawFrame)]
    size = 2 * RATE * frame_ms // 1000
    assert all(len(f.audio) == size for f in frames[1:]), {len(f.audio) for f in frames}
    assert abs(len(frames[0].audio) - size) <= 4  # the resampler's first answer may be a sample short
    # the audio is continuous: the ramp's codes appear in order, each once
    pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
    levels = [int(v) for v in pcm[::320]]
    changes = [b for a, b in itertools.pairwise(levels) if a != b]
    assert len(changes) >= packets - 10
    assert all(p.packet.payload_type == 0 and len(p.packet.payload) == 160 for p in phone.heard), \
        "the bot still sends 20 ms PCMU packets"
    assert pool.in_use == 0


def test_input_frame_ms_must_be_whole_playout_frames() -> None:
    pool = port_pool()
    session = RtpSession(pool.allocate(), ("127.0.0.1", 9), call_id="x")
    try:
        for bad in (0, 10, 30, 50):
            with pytest.raises(ValueError, match="input_frame_ms"):
                OpenSIPSTransport(session, "x", input_frame_ms=bad)
    finally:
        session.lease.release()
