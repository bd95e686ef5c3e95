"""One sample request on each sidecar, as a user would check a fresh install."""

from __future__ import annotations

import json
import time

import websockets

from ivrbot_sidecars.llama import chat_once
from ivrbot_tools.stack import StackConfig

SAMPLE_KO = "안녕하세요 예약을 하고 싶습니다"
SAMPLE_EN = "Hello! Thank you for calling. How can I help you today?"


async def transcribe(url: str, pcm16k: bytes) -> str:
    """Stream s16le 16 kHz audio to a vosk-server and return the final text."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        for i in range(0, len(pcm16k), 3200):
            await ws.send(pcm16k[i : i + 3200])
            await ws.recv()
        await ws.send('{"eof" : 1}')
        final = json.loads(await ws.recv())
    return str(final.get("text", ""))


async def synthesize(url: str, text: str) -> tuple[int, int, float]:
    """Speak one utterance on the Piper server; returns (sample_rate, pcm bytes, seconds to first audio)."""
    async with websockets.connect(url) as ws:
        ready = json.loads(await ws.recv())
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "speak", "id": "check", "text": text, "flush": True}))
        total = 0
        first: float | None = None
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                first = first if first is not None else time.perf_counter() - t0
                total += len(msg)
            elif json.loads(msg).get("type") == "audio_end":
                break
    return int(ready["sample_rate"]), total, first or 0.0


async def check_stack(config: StackConfig) -> int:
    from ivrbot_tools.speech_samples import caller_speech

    pcm = caller_speech(SAMPLE_KO, voice="ko", sample_rate=16000)
    t0 = time.perf_counter()
    text = await transcribe(config.vosk_url, pcm)
    print(f"vosk   : spoke {SAMPLE_KO!r} ({len(pcm) / 32000:.1f} s) -> transcript {text!r} "
          f"in {time.perf_counter() - t0:.2f} s")
    rate, nbytes, ttfa = await synthesize(config.piper_url, SAMPLE_EN)
    print(f"piper  : {SAMPLE_EN!r} -> {nbytes / 2 / rate:.2f} s of audio at {rate} Hz, first audio after "
          f"{ttfa * 1000:.0f} ms")
    reply, ttft = await chat_once(config.llama_url, config.system_prompt, "What are your opening hours?")
    print(f"llama  : 'What are your opening hours?' -> {reply!r} (first token after {ttft * 1000:.0f} ms)")
    ok = bool(text.strip()) and nbytes > 0 and bool(reply.strip())
    print("stack check:", "ok" if ok else "FAILED")
    return 0 if ok else 1
