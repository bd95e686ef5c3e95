"""Soak: many sequential real calls against one `ivrbot serve`; does anything grow per call?

Samples the bot process between calls: RSS and open file descriptors (psutil), asyncio tasks and
leased RTP port pairs (its /metrics gauges). Echo calls exercise SIP, RTP and the call lifecycle;
assistant calls add the Pipecat pipeline and the three sidecar connections. Writes every sample to
``--out`` (JSON) and prints a summary: first, last, peak, and the growth over the second half of the
run (after warm-up), per 100 calls.

    .venv/bin/python benchmarks/soak.py --mode echo --calls 1000
    .venv/bin/python benchmarks/soak.py --mode assistant --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from ivrbot_tools import terminate
from ivrbot_tools.caller import CallFailed, SipCaller
from ivrbot_tools.local import LocalBot, LocalBotConfig
from ivrbot_tools.speech_samples import caller_speech, silence

QUESTION = "안녕하세요 영업 시간이 어떻게 되나요"


async def gauges(http_port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{http_port}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("ivrbot_asyncio_tasks", "ivrbot_rtp_ports_leased", "ivrbot_calls_active"):
            if line.startswith(name + " "):
                out[name] = float(line.split()[1])
    return out


async def one_call(bot: LocalBot, mode: str, speech: bytes) -> bool:
    try:
        async with SipCaller(bot.sip_target, answer_timeout=10.0) as call:
            if mode == "echo":
                await call.play(speech)
                return await call.wait_audible(0.0, 2.0) is not None
            await call.play(speech)
            heard = await call.wait_audible(time.monotonic(), 15.0)
            return heard is not None
    except (CallFailed, TimeoutError, OSError):
        return False


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rss_mb", "fds", "tasks", "ports_leased")
    half = samples[len(samples) // 2 :]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [s[k] for s in samples]
        calls = half[-1]["calls"] - half[0]["calls"] if len(half) > 1 else 0
        growth = (half[-1][k] - half[0][k]) * 100 / calls if calls else 0.0
        out[k] = {"first": vals[0], "last": vals[-1], "peak": max(vals), "per_100_calls_second_half": round(growth, 2)}
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = (silence(0.6, sample_rate=8000) + b"\x10\x27" * 4000) if args.mode == "echo" else \
        caller_speech(QUESTION, voice="ko", sample_rate=8000)
    log = Path(tempfile.mkdtemp(prefix="ivrbot-soak-")) / "bot.log"
    cfg = LocalBotConfig(log_path=log, echo=args.mode == "echo", max_calls=4,
                         env={"IVRBOT_GREETING": "", "IVRBOT_LOG_LEVEL": "WARNING"})
    samples: list[dict[str, Any]] = []
    failed = 0
    async with LocalBot(cfg) as bot:
        assert bot.bot is not None and bot.bot.pid is not None
        proc = psutil.Process(bot.bot.pid)
        t0 = time.monotonic()
        for i in range(args.calls + 1):
            if i % args.every == 0 or i == args.calls:
                await asyncio.sleep(0.3)  # let the last call's tear-down finish
                g = await gauges(bot.http_port)
                samples.append({
                    "calls": i, "seconds": round(time.monotonic() - t0, 1),
                    "rss_mb": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds(),
                    "tasks": g.get("ivrbot_asyncio_tasks", -1), "ports_leased": g.get("ivrbot_rtp_ports_leased", -1),
                    "calls_active": g.get("ivrbot_calls_active", -1), "failed": failed,
                })
                print(json.dumps(samples[-1]), flush=True)
            if i < args.calls and not await one_call(bot, args.mode, speech):
                failed += 1
    result = {"mode": args.mode, "calls": args.calls, "failed": failed, "load_avg_end": psutil.getloadavg(),
              "summary": summary(samples), "samples": samples}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["echo", "assistant"], default="echo")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--every", type=int, default=25, help="sample every N calls")
    p.add_argument("--out", default="")
    args = p.parse_args()
    args.out = args.out or f"docs/bench/soak-{args.mode}.json"
    result = terminate.run(run(args))  # SIGTERM stops the stack it started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("mode", "calls", "failed", "summary")}, indent=1))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
