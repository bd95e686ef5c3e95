"""A call's first chunk while other calls' replies are synthesized: Piper time to first audio.

Starts ``ivrbot piper-server``; measures a short first chunk alone, then the same chunk sent 0.3 s
after two other connections each sent a whole five-sentence reply (13 s of audio), as calls that
reply at about the same time do; and whether those replies' audio ever came later than a client
playing it as it arrives would need it (``gaps_ms``). Writes JSON with every trial.

    .venv/bin/python benchmarks/piper_contention.py --trials 5 --out /tmp/piper-contention.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from speech_servers import start, stop
from websockets.asyncio.client import connect

from ivrbot_sidecars.models import piper_voice_path

REPLY = [
    "I'm sorry for any misunderstanding.",
    "I am here to help you with your order and your account.",
    "Could you please tell me your order number, so that I can look it up for you?",
    "If you prefer, I can also connect you with one of our agents.",
    "Is there anything else I can do for you today?",
]
FIRST = "I'm sorry for the wait,"


async def speak(url: str, texts: list[str], delay: float) -> dict[str, float]:
    """Send ``texts`` as utterances after ``delay``; time to the first frame and to the last end."""
    async with connect(url, max_size=None) as ws:
        rate = int(json.loads(await ws.recv())["sample_rate"])  # ready
        await asyncio.sleep(delay)
        t0 = time.perf_counter()
        for i, text in enumerate(texts):
            await ws.send(json.dumps({"type": "speak", "id": i + 1, "text": text}))
        first, ends, nbytes = None, 0, 0
        arrivals: list[tuple[float, int]] = []
        while ends < len(texts):
            msg = await ws.recv()
            if isinstance(msg, bytes):
                nbytes += len(msg)
                arrivals.append((time.perf_counter(), len(msg)))
                first = first if first is not None else time.perf_counter() - t0
            elif json.loads(msg)["type"] == "audio_end":
                ends += 1
        return {"ttfa_ms": round(1000 * (first or 0.0)), "total_ms": round(1000 * (time.perf_counter() - t0)),
                "audio_s": round(nbytes / 2 / rate, 2), "gaps_ms": round(1000 * gaps(arrivals, rate))}


def gaps(arrivals: list[tuple[float, int]], rate: int) -> float:
    """Silence a client playing each frame as it comes would have heard between the first and last
    frames: the sum of the times a frame arrived after the audio before it had finished playing."""
    silent = 0.0
    play_end = arrivals[0][0] if arrivals else 0.0
    for at, size in arrivals:
        if at > play_end:
            silent += at - play_end
            play_end = at
        play_end += size / 2 / rate
    return silent


async def run(trials: int) -> dict[str, Any]:
    proc, port = await start("ivrbot_sidecars.piper_server", "--voice", str(piper_voice_path()))
    url = f"ws://127.0.0.1:{port}"
    alone: list[dict[str, float]] = []
    contended: list[dict[str, float]] = []
    replies: list[dict[str, float]] = []
    try:
        for _ in range(2):
            await speak(url, [FIRST], 0.0)  # warm
        for _ in range(trials):
            alone.append(await speak(url, [FIRST], 0.0))
        for _ in range(trials):
            a, b, c = await asyncio.gather(speak(url, REPLY, 0.0), speak(url, REPLY, 0.05), speak(url, [FIRST], 0.3))
            replies += [a, b]
            contended.append(c)
    finally:
        await stop(proc)

    def med(runs: list[dict[str, float]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return {
        "first_chunk": FIRST, "trials": trials,
        "alone_ttfa_ms_median": med(alone, "ttfa_ms"),
        "contended_ttfa_ms_median": med(contended, "ttfa_ms"),
        "reply_total_ms_median": med(replies, "total_ms"),
        "reply_gaps_ms_max": max(r["gaps_ms"] for r in replies),
        "alone": alone, "contended": contended, "replies": replies,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    result = asyncio.run(run(args.trials))
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
