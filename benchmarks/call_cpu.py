"""The bot process's own CPU per call-second, silent and talking callers, 1 and 3 concurrent calls.

Starts the speech stack and one ``ivrbot serve`` (assistant mode, the real pipeline, no greeting),
then for each scenario places ``concurrency`` real SIP/RTP calls at once and, once every call has
been up for ``--warmup`` seconds, takes the bot process's CPU time (user + system, all threads:
Silero included; the Vosk/Piper/llama sidecars are other processes and excluded) over ``--seconds``.
CPU per call-second = that delta / (seconds x concurrent calls). The bot runs with no silence
hang-up, and a scenario in which a call ended before its window did is refused rather than
reported (before 2026-12-04 07:00 a silent caller was hung up 30 s in, inside a 30 s window).
Scenarios:

- ``silent``: the caller sends PCMU silence the whole time (the phone's continuous 20 ms stream).
- ``talking``: the caller loops a spoken question with 0.5 s pauses; the bot transcribes, answers
  and is interrupted, as with a caller who keeps talking.

The idle bot (no call) is measured too, as CPU per second, so the per-call figure can be read
against it. Writes JSON to ``--out`` with the load average before and after.

    .venv/bin/python benchmarks/call_cpu.py --seconds 30 --out docs/bench/call-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from ivrbot_tools import terminate
from ivrbot_tools.caller import SipCaller
from ivrbot_tools.local import LocalBot, LocalBotConfig
from ivrbot_tools.speech_samples import caller_speech, silence

QUESTION = "안녕하세요 영업 시간이 어떻게 되나요"


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def keep_talking(call: SipCaller, speech: bytes, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await call.play(speech)


async def scenario(bot: LocalBot, proc: psutil.Process, mode: str, concurrency: int,
                   seconds: float, warmup: float, speech: bytes) -> dict[str, Any]:
    stop = asyncio.Event()
    up = 0
    all_up = asyncio.Event()
    done = asyncio.Event()
    ended_early: list[int] = []

    async def one(i: int) -> None:
        nonlocal up
        async with SipCaller(bot.sip_target, answer_timeout=20.0) as call:
            talker = asyncio.create_task(keep_talking(call, speech, stop)) if mode == "talking" else None
            up += 1
            if up == concurrency:
                all_up.set()
            await done.wait()
            if call.ended.is_set():
                ended_early.append(i)
            stop.set()
            if talker is not None:
                talker.cancel()
                await asyncio.gather(talker, return_exceptions=True)

    calls = [asyncio.create_task(one(i)) for i in range(concurrency)]
    try:
        await asyncio.wait_for(all_up.wait(), 60)
        await asyncio.sleep(warmup)
        load0 = os.getloadavg()
        m0 = psutil.cpu_times()
        c0, t0 = cpu_seconds(proc), time.monotonic()
        await asyncio.sleep(seconds)
        c1, t1 = cpu_seconds(proc), time.monotonic()
        m1 = psutil.cpu_times()
    finally:
        done.set()
        await asyncio.gather(*calls, return_exceptions=True)
    if ended_early:
        # a call that ended inside the window makes the figure a mix of call and idle time
        raise RuntimeError(f"{mode} x{concurrency}: calls {ended_early} ended before the window did")
    wall = t1 - t0
    per = (c1 - c0) / (wall * concurrency)
    return {
        "mode": mode, "calls": concurrency, "window_s": round(wall, 2), "cpu_s": round(c1 - c0, 3),
        "cpu_per_call_second": round(per, 4), "pct_core_per_call": round(100 * per, 1),
        "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        # time the hypervisor gave the machine's CPUs to others: a shared host makes the same work
        # cost more CPU time, and this is the one sign of it a guest can read
        "machine_steal_pct": round(100 * steal(m0, m1), 1),
    }


def steal(before: Any, after: Any) -> float:
    """Share of all CPU time over the interval that was stolen (0 where the kernel reports none)."""
    total = sum(after) - sum(before)
    return (getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)) / total if total > 0 else 0.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = caller_speech(QUESTION, voice="ko", sample_rate=8000) + silence(0.5, sample_rate=8000)
    log = Path(tempfile.mkdtemp(prefix="ivrbot-callcpu-")) / "bot.log"
    cfg = LocalBotConfig(log_path=log, max_calls=8,
                         env={"IVRBOT_GREETING": "", "IVRBOT_LOG_LEVEL": "WARNING",
                              # a silent caller is hung up after 30 s otherwise: the window would
                              # then hold the teardown and idle time, not a call
                              "IVRBOT_SILENCE_TIMEOUT_SECS": "0"})
    results: list[dict[str, Any]] = []
    async with LocalBot(cfg) as bot:
        assert bot.bot is not None and bot.bot.pid is not None
        proc = psutil.Process(bot.bot.pid)
        # one throwaway call: imports, model loads and first-use costs are not per-call costs
        await scenario(bot, proc, "talking", 1, 3.0, 1.0, speech)
        await asyncio.sleep(2.0)
        c0, t0 = cpu_seconds(proc), time.monotonic()
        await asyncio.sleep(args.idle)
        idle = (cpu_seconds(proc) - c0) / (time.monotonic() - t0)
        for concurrency in args.levels:
            for mode in args.modes:
                r = await scenario(bot, proc, mode, concurrency, args.seconds, args.warmup, speech)
                print(json.dumps(r), flush=True)
                results.append(r)
                await asyncio.sleep(1.0)
    return {
        "seconds": args.seconds, "warmup": args.warmup, "cpu_count": psutil.cpu_count(),
        "idle_cpu_per_second": round(idle, 4), "results": results,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="measured window per scenario")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after all calls are up, before measuring")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of the idle bot measured")
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3])
    p.add_argument("--modes", type=lambda s: s.split(","), default=["silent", "talking"])
    p.add_argument("--out", default="docs/bench/call-cpu.json")
    args = p.parse_args()
    result = terminate.run(run(args))  # SIGTERM stops the stack it started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
