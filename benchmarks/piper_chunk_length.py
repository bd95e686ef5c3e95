"""How long Piper takes to synthesize a reply's first chunk, by its length: idle, and while
llama-server writes (as it does, for the rest of the reply, while the first chunk is synthesized).

Loads the bundled voice in this process the way ``piper-server`` does (``load_voice``: 2 ONNX
threads, no spinning) and times phonemization plus synthesis of the first pass; the "busy" rows
run the same while a real llama-server streams completions back to back. Writes JSON.

    .venv/bin/python benchmarks/piper_chunk_length.py --repeat 15 --out docs/bench/piper-chunk.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from ivrbot.assistant_settings import DEFAULT_SYSTEM_PROMPT
from ivrbot_sidecars import models
from ivrbot_sidecars.llama import LlamaServer, LlamaServerConfig, chat_once
from ivrbot_sidecars.piper_server import load_voice, phoneme_passes, synthesize_pass
from ivrbot_tools.local import free_port

#: first chunks as the aggregator cuts them: two words (today), then what a 0.15 s timer gave
CHUNKS = [
    "I'm sorry",
    "I can help you",
    "I'm sorry for any misunderstanding.",
    "The most recent season of the latest TV show.",
]


def synth_ms(voice: Any, text: str, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        synthesize_pass(voice, phoneme_passes(voice, text)[0])
        times.append((time.perf_counter() - t0) * 1000.0)
        time.sleep(0.05)
    times.sort()
    return {"p50": round(statistics.median(times), 1), "p90": round(times[int(0.9 * (len(times) - 1))], 1)}


def measure(voice: Any, repeat: int) -> dict[str, dict[str, float]]:
    return {text: synth_ms(voice, text, repeat) for text in CHUNKS}


async def run(repeat: int) -> dict[str, Any]:
    voice = load_voice(models.piper_voice_path())
    measure(voice, 2)  # warm
    idle = measure(voice, repeat)
    server = LlamaServer(LlamaServerConfig(model=models.llama_model_path(), port=free_port(), parallel=2))
    await server.start()
    stop = threading.Event()

    def writer() -> None:
        async def loop() -> None:
            while not stop.is_set():
                await chat_once(server.base_url, DEFAULT_SYSTEM_PROMPT, "Tell me a long story.", max_tokens=200)
        asyncio.run(loop())

    thread = threading.Thread(target=writer, daemon=True)
    try:
        thread.start()
        await asyncio.sleep(1.0)
        busy = await asyncio.to_thread(measure, voice, repeat)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        await server.stop()
    return {
        "command": f"benchmarks/piper_chunk_length.py --repeat {repeat}",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "unit": "ms to phonemize and synthesize the first pass",
        "idle": idle,
        "llama_writing": busy,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--out", type=Path, default=Path("docs/bench/piper-chunk.json"))
    a = p.parse_args()
    result = asyncio.run(run(a.repeat))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
