"""llama-server time to first token with a cached and an uncached system prompt (not a test).

Starts the real llama-server with the bundled SmolLM2 GGUF, warms it with the bot's system prompt,
then times streamed completions: `cached` reuse that prefix, `uncached` each use a new prompt of the
same size. Writes docs/bench/llama.json.

    .venv/bin/python benchmarks/llama_ttft.py --repeat 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path

from ivrbot.assistant_settings import DEFAULT_SYSTEM_PROMPT
from ivrbot_sidecars import models
from ivrbot_sidecars.llama import LlamaServer, LlamaServerConfig, chat_once
from ivrbot_tools.local import free_port

QUESTIONS = ["What are your opening hours?", "Can I book a table for two?", "Where are you located?"]


async def run(repeat: int) -> dict[str, object]:
    server = LlamaServer(LlamaServerConfig(model=models.llama_model_path(), port=free_port(), parallel=2))
    t0 = time.perf_counter()
    await server.start()
    load_s = time.perf_counter() - t0
    try:
        await server.warm_up(DEFAULT_SYSTEM_PROMPT)
        cached, uncached, rates = [], [], []
        for i in range(repeat):
            q = QUESTIONS[i % len(QUESTIONS)]
            t = time.perf_counter()
            text, ttft = await chat_once(server.base_url, DEFAULT_SYSTEM_PROMPT, q, max_tokens=60)
            total = time.perf_counter() - t
            cached.append(ttft * 1000)
            if total > ttft and text:
                rates.append(len(text.split()) / (total - ttft))
            fresh = f"[{uuid.uuid4().hex}] " + DEFAULT_SYSTEM_PROMPT  # a prefix the cache has never seen
            _, ttft_new = await chat_once(server.base_url, fresh, q, max_tokens=8)
            uncached.append(ttft_new * 1000)
    finally:
        await server.stop()
    return {
        "model": models.llama_model_path().name,
        "load_s": round(load_s, 2),
        "ttft_cached_ms": {"median": round(statistics.median(cached), 1), "min": round(min(cached), 1)},
        "ttft_uncached_ms": {"median": round(statistics.median(uncached), 1), "min": round(min(uncached), 1)},
        "words_per_s_median": round(statistics.median(rates), 1) if rates else None,
        "repeat": repeat,
        "load_avg_1m": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("docs/bench/llama.json"))
    a = p.parse_args()
    result = asyncio.run(run(a.repeat))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
