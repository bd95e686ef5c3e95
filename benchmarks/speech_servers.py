"""Measure the Vosk and Piper servers as the bot uses them: real server processes over WebSocket.

- Vosk real-time factor = decode time / audio time, for one session and for two at once. Audio is
  sent as fast as the server answers (one reply per 100 ms frame), so the figure is the server's
  decoding speed, not the pace of a live call (a live call needs RTF < 1 to keep up).
- Piper time to first audio: from sending ``speak`` to the first binary frame, for a short sentence
  and a long multi-sentence text (whose first sentence is long), plus the whole synthesis time.

Usage: .venv/bin/python benchmarks/speech_servers.py [--repeat 5] [--out docs/bench/speech.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from ivrbot_sidecars.models import piper_voice_path, vosk_model_path
from ivrbot_tools.speech_samples import caller_speech, silence

KOREAN = "여보세요. 안녕하세요. 예약을 확인하고 싶습니다. 전화번호를 알려 주세요. 감사합니다."
SHORT = "Hello, how can I help you?"
LONG = (
    "Thank you for calling the support line of our company, where we are always happy to help you "
    "with your order, your invoice or anything else you need today. Your call is important to us. "
    "Please stay on the line and an agent will be with you shortly. You can also visit our website."
)
CHUNK = 3200  # 100 ms at 16 kHz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start(module: str, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), *args,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        if proc.returncode is not None:
            raise SystemExit(f"{module} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            await asyncio.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{module} did not listen")


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def vosk_session(url: str, pcm: bytes) -> dict[str, Any]:
    async with connect(url) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000, "words": 1}}))
        t0 = time.perf_counter()
        texts = []
        for i in range(0, len(pcm), CHUNK):
            await ws.send(pcm[i : i + CHUNK])
            reply = json.loads(await ws.recv())
            if reply.get("text"):
                texts.append(reply["text"])
        await ws.send('{"eof" : 1}')
        final = json.loads(await ws.recv())
        took = time.perf_counter() - t0
    if final.get("text"):
        texts.append(final["text"])
    audio = len(pcm) / 32000
    return {"audio_s": round(audio, 3), "decode_s": round(took, 3), "rtf": round(took / audio, 3),
            "transcript": " ".join(texts)}


async def bench_vosk(repeat: int) -> dict[str, Any]:
    pcm = caller_speech(KOREAN) + silence(0.5)
    proc, port = await start("ivrbot_sidecars.vosk_server", "--model", str(vosk_model_path()))
    url = f"ws://127.0.0.1:{port}"
    try:
        await vosk_session(url, pcm)  # warm: page in the model
        one = [await vosk_session(url, pcm) for _ in range(repeat)]
        two: list[dict[str, Any]] = []
        for _ in range(repeat):
            two.extend(await asyncio.gather(vosk_session(url, pcm), vosk_session(url, pcm)))
    finally:
        await stop(proc)
    return {
        "model": str(vosk_model_path()),
        "spoken": KOREAN,
        "transcript": one[0]["transcript"],
        "audio_seconds": one[0]["audio_s"],
        "one_session": {"rtf_median": _median(one, "rtf"), "rtf_min": _min(one, "rtf"), "runs": len(one)},
        "two_sessions": {"rtf_median": _median(two, "rtf"), "rtf_min": _min(two, "rtf"), "runs": len(two)},
    }


async def piper_utterance(url: str, text: str) -> dict[str, Any]:
    async with connect(url) as ws:
        ready = json.loads(await ws.recv())
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "speak", "id": 1, "text": text}))
        first = None
        nbytes = 0
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                first = first if first is not None else time.perf_counter() - t0
                nbytes += len(msg)
            elif json.loads(msg)["type"] == "audio_end":
                break
        total = time.perf_counter() - t0
    audio = nbytes / 2 / ready["sample_rate"]
    return {"ttfa_s": round(first or total, 3), "total_s": round(total, 3), "audio_s": round(audio, 3),
            "rtf": round(total / audio, 3)}


async def bench_piper(repeat: int) -> dict[str, Any]:
    proc, port = await start("ivrbot_sidecars.piper_server", "--voice", str(piper_voice_path()))
    url = f"ws://127.0.0.1:{port}"
    out: dict[str, Any] = {"voice": str(piper_voice_path())}
    try:
        for name, text in (("short", SHORT), ("long", LONG)):
            runs = [await piper_utterance(url, text) for _ in range(repeat)]
            out[name] = {
                "text": text,
                "ttfa_ms_median": round(1000 * _median(runs, "ttfa_s")),
                "ttfa_ms_min": round(1000 * _min(runs, "ttfa_s")),
                "ttfa_ms_max": round(1000 * max(r["ttfa_s"] for r in runs)),
                "audio_seconds": runs[0]["audio_s"],
                "synthesis_rtf_median": _median(runs, "rtf"),
                "runs": len(runs),
            }
    finally:
        await stop(proc)
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(float(r[key]) for r in runs)), 3)


def _min(runs: list[dict[str, Any]], key: str) -> float:
    return round(min(float(r[key]) for r in runs), 3)


async def run(repeat: int) -> dict[str, Any]:
    load = os.getloadavg()
    vosk = await bench_vosk(repeat)
    piper = await bench_piper(repeat)
    return {
        "command": f".venv/bin/python benchmarks/speech_servers.py --repeat {repeat}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_start": load},
        "vosk": vosk,
        "piper": piper,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("docs/bench/speech.json"))
    a = p.parse_args(argv)
    result = asyncio.run(run(a.repeat))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
