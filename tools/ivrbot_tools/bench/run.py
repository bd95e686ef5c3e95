"""Running the levels: the local stack or a target bot, concurrent callers, resource sampling."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ivrbot.telemetry.budget import LatencyBudget
from ivrbot_tools.bench.profiles import (
    DEFAULT_GREETING,
    DEFAULT_PROFILES,
    PROFILES,
    QUESTIONS,
    CallerProfile,
    profile_plan,
)
from ivrbot_tools.bench.results import (
    STAGES,
    TARGET_P95_MS,
    CallResult,
    level_holds,
    max_concurrency_within,
    stages_from_log,
    stages_from_trace,
    summarize,
)
from ivrbot_tools.caller import CallFailed, SipCaller
from ivrbot_tools.demo import trim_silence
from ivrbot_tools.local import LocalBot, LocalBotConfig, read_events
from ivrbot_tools.otlp_receiver import OtlpReceiver
from ivrbot_tools.stack import StackConfig

DEFAULT_LEVELS = (1, 2, 4, 8)

DEFAULT_OUT = Path("docs/bench")

@dataclass
class BenchConfig:
    levels: tuple[int, ...] = DEFAULT_LEVELS
    calls_per_level: int = 5
    target: tuple[str, int] | None = None
    out: Path = DEFAULT_OUT
    questions: tuple[str, ...] = QUESTIONS
    greeting: str = DEFAULT_GREETING
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    reply_timeout: float = 20.0
    stagger: float = 1.0
    watch: dict[str, int] = field(default_factory=dict)
    command: str = ""

class ResourceMonitor:
    """CPU seconds and peak RSS of named processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self._procs: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._interval = interval
        self._cpu0: dict[str, float] = {}
        self._peak: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def _sample(self) -> None:
        for name, p in self._procs.items():
            try:
                self._peak[name] = max(self._peak.get(name, 0), int(p.memory_info().rss))
            except psutil.Error:
                continue

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._peak.clear()
        for name, p in self._procs.items():
            try:
                self._cpu0[name] = self._cpu(p)
            except psutil.Error:
                continue
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bench-resources")

    async def stop(self) -> dict[str, dict[str, float | int]]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._sample()
        wall = max(1e-6, time.monotonic() - self._t0)
        out: dict[str, dict[str, float | int]] = {}
        for name, p in self._procs.items():
            try:
                cpu = self._cpu(p) - self._cpu0.get(name, 0.0)
            except psutil.Error:
                continue
            out[name] = {
                "pid": p.pid,
                "cpu_s": round(cpu, 2),
                "cpu_pct": round(100.0 * cpu / wall, 1),
                "peak_rss_mb": round(self._peak.get(name, 0) / 2**20, 1),
            }
        return out


# -- one call -------------------------------------------------------------------------------------


async def place_call(
    target: tuple[str, int],
    question_pcm8k: bytes,
    result: CallResult,
    *,
    reply_timeout: float,
    profile: CallerProfile = PROFILES["greeting"],
    again_pcm8k: bytes | None = None,
) -> None:
    """One call as ``profile`` behaves: the question(s), each reply until it ends; fills ``result``."""
    try:
        async with SipCaller(target) as call:
            result.call_id = call.record.call_id
            if profile.wait_greeting and await call.wait_audible(0.0, 5.0) is not None:
                await call.wait_quiet(0.8, 20.0)
            if profile.silence_before_s > 0:
                await asyncio.sleep(profile.silence_before_s)  # the caller's stream carries silence
            questions = [question_pcm8k]
            if profile.open_line_s > 0:
                questions.append(again_pcm8k or question_pcm8k)
            for n, pcm in enumerate(questions):
                if n:
                    await asyncio.sleep(profile.open_line_s)
                await call.play(pcm)
                t_end = call.record.speech_sent_until or time.monotonic()
                result.speech_end_unix_ns = time.time_ns() - round((time.monotonic() - t_end) * 1e9)
                t_first = await call.wait_audible(t_end, reply_timeout)
                if t_first is None:
                    result.error = "no reply audio" if not call.ended.is_set() else "call ended without a reply"
                    return
                result.turns_ms.append(round((t_first - t_end) * 1000.0, 1))
                await call.wait_quiet(1.0, 30.0)
            result.caller_latency_ms = result.turns_ms[-1]
            result.reply_audio_s = round(call.record.audible_seconds(t_end), 2)
            result.ok = True
    except (CallFailed, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"

class Bench:
    """Runs the levels against one bot; ``run()`` returns the results document."""

    def __init__(self, config: BenchConfig, target: tuple[str, int], receiver: OtlpReceiver,
                 pids: dict[str, int], log_path: Path | None) -> None:
        self.config = config
        self.target = target
        self.receiver = receiver
        self.pids = pids
        self.log_path = log_path
        from ivrbot_tools.speech_samples import caller_speech

        self.speech = {q: trim_silence(caller_speech(q, voice="ko", sample_rate=8000)) for q in config.questions}
        self.calls: list[CallResult] = []
        self._rng = random.Random(1)

    async def _stage_times(self, result: CallResult) -> None:
        if not result.call_id:
            return
        try:
            trace = await asyncio.to_thread(self.receiver.trace_of, result.call_id, 15.0)
            stages, total, turn_start_ns = stages_from_trace(trace, -1 if len(result.turns_ms) > 1 else 0)
        except AssertionError:
            stages, total, turn_start_ns = {}, None, None
        if stages:
            result.stages_ms, result.bot_total_ms, result.stages_source = stages, total, "spans"
            if turn_start_ns is not None and result.speech_end_unix_ns:
                # both wall clocks of this machine: the bot's span time and the caller's
                result.pre_vad_ms = round((turn_start_ns - result.speech_end_unix_ns) / 1e6, 1)
            return
        if self.log_path is not None:
            stages, total = stages_from_log(read_events(self.log_path, result.call_id))
            if stages:
                result.stages_ms, result.bot_total_ms, result.stages_source = stages, total, "log"

    async def run_level(self, concurrency: int) -> dict[str, Any]:
        plan = profile_plan(max(self.config.calls_per_level, concurrency), self.config.profiles,
                            len(self.config.questions))
        n_calls = len(plan)
        pending: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n_calls):
            pending.put_nowait(i)
        results: list[CallResult] = []
        t0 = time.monotonic()

        async def caller(slot: int) -> None:
            await asyncio.sleep(self._rng.uniform(0.0, self.config.stagger) if slot else 0.0)
            while True:
                try:
                    i = pending.get_nowait()
                except asyncio.QueueEmpty:
                    return
                name, qi = plan[i]
                q = self.config.questions[qi]
                again = self.config.questions[(qi + 1) % len(self.config.questions)]
                r = CallResult(level=concurrency, index=i, question=q, profile=name,
                               started_s=round(time.monotonic() - t0, 2))
                results.append(r)
                await place_call(self.target, self.speech[q], r, reply_timeout=self.config.reply_timeout,
                                 profile=PROFILES[name], again_pcm8k=self.speech[again])
                say(f"  c={concurrency} call {i + 1}/{n_calls} ({name}): " + (
                    f"{r.caller_latency_ms:.0f} ms" if r.ok and r.caller_latency_ms is not None else f"FAILED {r.error}"
                ))

        load0 = os.getloadavg()
        monitor = ResourceMonitor(self.pids)
        monitor.start()
        try:
            await asyncio.gather(*(caller(s) for s in range(concurrency)))
        finally:
            resources = await monitor.stop()
        wall = time.monotonic() - t0
        load1 = os.getloadavg()
        await asyncio.gather(*(self._stage_times(r) for r in results))
        results.sort(key=lambda r: r.index)
        self.calls.extend(results)
        ok = [r for r in results if r.ok and r.caller_latency_ms is not None]
        stages = {s: summarize([r.stages_ms[s] for r in ok if s in r.stages_ms]) for s in STAGES}
        stages["total"] = summarize([r.bot_total_ms for r in ok if r.bot_total_ms is not None])
        stages["pre_vad"] = summarize([r.pre_vad_ms for r in ok if r.pre_vad_ms is not None])
        return {
            "concurrency": concurrency,
            "calls": len(results),
            "ok": len(ok),
            "failed": len(results) - len(ok),
            "caller_latency_ms": summarize([r.caller_latency_ms for r in ok if r.caller_latency_ms is not None]),
            "profiles": {
                name: {
                    "calls": sum(1 for r in results if r.profile == name),
                    "caller_latency_ms": summarize(
                        [r.caller_latency_ms for r in ok if r.profile == name and r.caller_latency_ms is not None]
                    ),
                    "vad_to_stt_ms": summarize(
                        [r.stages_ms["vad_to_stt"] for r in ok if r.profile == name and "vad_to_stt" in r.stages_ms]
                    ),
                }
                for name in self.config.profiles
            },
            "stages_ms": stages,
            "stage_sources": sorted({r.stages_source for r in ok}),
            "wall_s": round(wall, 1),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in load1],
            "resources": resources,
        }

    async def run(self) -> dict[str, Any]:
        started = dt.datetime.now(dt.UTC)
        load0 = os.getloadavg()
        levels: list[dict[str, Any]] = []
        for c in self.config.levels:
            say(f"level: {c} concurrent call(s), {max(self.config.calls_per_level, c)} calls ...")
            lv = await self.run_level(c)
            lv["holds_target"] = level_holds(lv)
            levels.append(lv)
            cl = lv["caller_latency_ms"]
            say(f"  -> p50 {cl['p50']} ms, p95 {cl['p95']} ms, max {cl['max']} ms, failed {lv['failed']}")
        budget = LatencyBudget()
        return {
            "schema": 1,
            "command": self.config.command,
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg_start": [round(x, 2) for x in load0],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            },
            "config": {
                "levels": list(self.config.levels),
                "calls_per_level": self.config.calls_per_level,
                "target": None if self.config.target is None else f"{self.target[0]}:{self.target[1]}",
                "questions": list(self.config.questions),
                "question_seconds": {q: round(len(p) / 16000, 2) for q, p in self.speech.items()},
                "greeting": self.config.greeting,
                "profiles": {n: PROFILES[n].description for n in self.config.profiles},
                "stagger_s": self.config.stagger,
            },
            "target_p95_ms": TARGET_P95_MS,
            "budget_ms": {s: round((budget.limit(s) or 0.0) * 1000.0) for s in (*STAGES, "total")
                          if budget.limit(s) is not None},
            "max_concurrency_within_target": max_concurrency_within(levels),
            "levels": levels,
            "calls": [asdict(r) for r in self.calls],
        }


# -- outputs --------------------------------------------------------------------------------------

def say(msg: str) -> None:
    print(msg, flush=True)


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run every level (starting the local stack unless ``config.target``); returns the results."""
    with OtlpReceiver(grpc_enabled=False) as receiver:
        if config.target is not None:
            say(f"bench: against {config.target[0]}:{config.target[1]}; for stage times export the bot's "
                f"spans to OTEL_EXPORTER_OTLP_ENDPOINT={receiver.http_endpoint} (http/protobuf)")
            bench = Bench(config, config.target, receiver, dict(config.watch), None)
            return await bench.run()
        top = max(config.levels)
        # The bot's log is the fallback source of stage times; it stays out of the committed results.
        log_path = Path(tempfile.gettempdir()) / f"ivrbot-bench-{os.getpid()}.log"
        bot_cfg = LocalBotConfig(
            log_path=log_path,
            max_calls=top + 2,
            rtp_ports=max(40, 4 * (top + 2)),
            env={
                "IVRBOT_GREETING": config.greeting,
                **receiver.env("http/protobuf", OTEL_SERVICE_NAME="ivrbot-bench", OTEL_BSP_SCHEDULE_DELAY="200"),
            },
        )
        from ivrbot_tools.local import free_port

        stack = StackConfig(
            vosk_port=free_port(), piper_port=free_port(), llama_port=free_port(), llama_parallel=max(top, 1)
        )
        say(f"bench: starting the local stack (llama-server --parallel {stack.llama_parallel}, "
            f"max calls {bot_cfg.max_calls}) ...")
        t0 = time.monotonic()
        async with LocalBot(bot_cfg, stack) as bot:
            llama = bot.stack.llama.config if bot.stack is not None else None
            # what the LLM runs as: the figures depend on it
            llama_info = None if llama is None else {
                "model": llama.model.name, "parallel": llama.parallel, "threads": llama.passed_threads,
                "extra_args": list(llama.extra_args),
            }
            say(f"  ready in {time.monotonic() - t0:.1f} s; llama-server {llama_info}; bot log {log_path}")
            pids = dict(config.watch)
            if bot.bot is not None and bot.bot.pid is not None:
                pids["bot"] = bot.bot.pid
            if bot.stack is not None:
                for name, proc in (("vosk", bot.stack.vosk), ("piper", bot.stack.piper),
                                   ("llama", bot.stack.llama.process)):
                    if proc.pid is not None:
                        pids[name] = proc.pid
            bench = Bench(config, bot.sip_target, receiver, pids, log_path)
            result = await bench.run()
            if llama_info is not None:
                result["config"]["llama_server"] = llama_info
            return result
