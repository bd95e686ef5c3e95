"""The assistant over the real OpenSIPSTransport: a phone sends G.711 speech over UDP, hears the reply.

Two calls run at once on separate RTP sessions; each phone hears only its own bot's reply.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import RecordingCallControl
from sidecar_procs import SidecarProcess

from ivrbot.assistant import CallAssistant
from ivrbot.assistant_settings import AssistantSettings
from ivrbot.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from ivrbot.rtp.packet import RtpPacket, parse_rtp
from ivrbot.rtp.ports import PortPool
from ivrbot.rtp.session import RtpSession
from ivrbot.transport import OpenSIPSTransport
from ivrbot_tools.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

QUESTION = "안녕하세요. 오늘 날씨가 어때요?"


@dataclass
class Phone(asyncio.DatagramProtocol):
    """A caller's RTP endpoint: sends 20 ms PCMU packets on a paced tick, keeps what it hears."""

    heard: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pkt = parse_rtp(data)
        if pkt.payload_type == 0:
            self.heard.append(pkt.payload)

    @classmethod
    async def open(cls) -> Phone:
        phone = cls()
        t, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        phone.transport = t
        return phone

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def speak(self, dest: tuple[str, int], pcm8k: bytes, ssrc: int) -> None:
        assert self.transport is not None
        ulaw = pcm_to_ulaw(pcm8k)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(len(ulaw) // 160):
            delay = t0 + i * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pkt = RtpPacket(0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, ssrc, ulaw[i * 160 : (i + 1) * 160], i == 0)
            self.transport.sendto(pkt.to_bytes(), dest)

    def voiced_secs(self, threshold: float = 300.0) -> float:
        n = 0
        for payload in self.heard:
            x = np.frombuffer(ulaw_to_pcm(payload), dtype="<i2").astype(np.float64)
            if x.size and float(np.sqrt(np.mean(x * x))) > threshold:
                n += 1
        return n * 0.02

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def until(pred: Any, timeout: float = 180.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_two_rtp_calls_each_hear_their_own_reply(
    vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess
) -> None:
    base = random.randrange(30000, 60000, 2)
    pool = PortPool(base, base + 7, host="127.0.0.1")
    settings = AssistantSettings(
        vosk_url=f"ws://127.0.0.1:{vosk.port}", piper_url=f"ws://127.0.0.1:{piper.port}",
        llama_url=f"http://127.0.0.1:{llama.port}/v1", max_tokens=30,
    )
    phones = [await Phone.open(), await Phone.open()]
    controls = [RecordingCallControl(), RecordingCallControl()]
    sessions = [RtpSession(pool.allocate(), p.addr, call_id=f"rtp-{i}") for i, p in enumerate(phones)]
    assistants = [CallAssistant(OpenSIPSTransport(s, f"rtp-{i}"), settings, controls[i], call_id=f"rtp-{i}")
                  for i, s in enumerate(sessions)]
    runs = [asyncio.create_task(a.run()) for a in assistants]
    try:
        assert await until(lambda: all(a.stt.connected for a in assistants))
        # Only call 0's caller speaks; call 1's caller stays silent (but sends silence).
        await asyncio.gather(
            phones[0].speak(("127.0.0.1", sessions[0].lease.rtp_port),
                            caller_speech(QUESTION, sample_rate=8000) + silence(1.0, sample_rate=8000), 0x1111),
            phones[1].speak(("127.0.0.1", sessions[1].lease.rtp_port), silence(3.0, sample_rate=8000), 0x2222),
        )
        a0, a1 = assistants
        assert await until(lambda: any(r.strip() for r in a0.replies))
        assert a0.transcripts and a0.transcripts[0].strip()
        assert await until(lambda: phones[0].voiced_secs() > 0.5)
        # Call 1 never spoke: no turn, no reply, and its phone heard no speech.
        assert a1.transcripts == [] and a1.replies == []
        assert phones[1].voiced_secs() == 0.0
    finally:
        for a in assistants:
            await a.worker.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        for p in phones:
            p.close()
    assert pool.in_use == 0, "each call's RTP ports go back to the pool when its pipeline ends"
