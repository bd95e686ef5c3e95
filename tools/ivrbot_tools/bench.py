"""`ivrbot bench`: end-of-question to first-reply latency under load, measured with real calls.

Each call is what a phone does: INVITE, RTP both ways from the ACK on, a Korean question spoken by
espeak-ng (trailing silence trimmed so its end is the caller's last word), the reply listened to,
BYE. When it asks is the caller profile's choice (``--profiles``): after hearing the greeting out,
at once, after 1.5 s or 5 s of silence, or again after keeping the line open; the latency a caller
gets must not depend on it, so each level places calls of every chosen profile and reports them
per profile too. The caller's clock gives the number the user feels (last speech packet sent ->
first non-silent reply packet received); the bot's spans, exported over OTLP to a receiver inside
this process, say where that time went (``turn`` span, children ``stt``/``llm``/``tts``/``rtp.send``).
The bot's JSON log ("turn latency") is the fallback when a trace does not arrive, and each call
records which source it used.

Levels run one after the other; at level ``c`` that many callers run at once (starts jittered over
``--stagger`` seconds so questions do not end on the same 20 ms tick) until ``max(calls, c)`` calls
are done. CPU seconds and peak RSS of the bot and each sidecar are sampled with psutil per level,
and the load average is written down, because the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ivrbot.telemetry.budget import LatencyBudget
from ivrbot_tools.caller import CallFailed, SipCaller
from ivrbot_tools.demo import trim_silence
from ivrbot_tools.local import LocalBot, LocalBotConfig, read_events
from ivrbot_tools.otlp_receiver import OtlpReceiver, ReceivedSpan
from ivrbot_tools.stack import StackConfig

#: what callers ask (Korean: the only Vosk model installable here is Korean)
QUESTIONS: tuple[str, ...] = (
    "안녕하세요 영업 시간이 어떻게 되나요",  # hello, what are your opening hours?
    "주문한 물건이 언제 도착하나요",  # when will my order arrive?
    "비밀번호를 바꾸고 싶어요",  # I want to change my password
    "매장 위치가 어디인가요",  # where is the shop?
)
DEFAULT_GREETING = "Hello, how can I help?"
DEFAULT_LEVELS = (1, 2, 4, 8)
#: the user's budget from the caller's last word to the first reply audio
TARGET_P95_MS = 1500.0
STAGES: tuple[str, ...] = ("vad_to_stt", "stt_to_llm", "llm_to_tts", "tts_to_rtp")
STAGE_OF_SPAN = {"stt": "vad_to_stt", "llm": "stt_to_llm", "tts": "llm_to_tts", "rtp.send": "tts_to_rtp"}
DEFAULT_OUT = Path("docs/bench")


@dataclass(frozen=True)
class CallerProfile:
    """How a caller behaves around its question; the latency it gets must not depend on this."""

    name: str
    description: str
    #: hear the bot's greeting out (up to 5 s for it to start) before anything else
    wait_greeting: bool = False
    #: silence sent before the (first) question
    silence_before_s: float = 0.0
    #: keep the line open this long, silent, after the reply; then ask again (that turn is measured)
    open_line_s: float = 0.0


PROFILES: dict[str, CallerProfile] = {
    p.name: p
    for p in (
        CallerProfile("greeting", "hears the greeting out, then asks", wait_greeting=True),
        CallerProfile("immediate", "asks right after the answer (RTP from the ACK on)"),
        CallerProfile("pause1.5", "asks after 1.5 s of silence", silence_before_s=1.5),
        CallerProfile("pause5", "asks after 5 s of silence", silence_before_s=5.0),
        CallerProfile("open-line", "asks at once, keeps the line open 5 s after the reply, asks again "
                      "(the second turn is measured)", open_line_s=5.0),
    )
}
DEFAULT_PROFILES: tuple[str, ...] = ("greeting",)


class BenchError(RuntimeError):
    """The benchmark could not run (bad arguments, stack failed to start)."""


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


@dataclass
class CallResult:
    level: int
    index: int
    question: str
    profile: str = "greeting"
    call_id: str = ""
    ok: bool = False
    error: str = ""
    caller_latency_ms: float | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    bot_total_ms: float | None = None
    #: caller's last speech packet -> the bot's VAD stop (turn span start): stop_secs + input path
    pre_vad_ms: float | None = None
    stages_source: str = "none"
    speech_end_unix_ns: int = 0
    reply_audio_s: float = 0.0
    started_s: float = 0.0
    #: caller-side latency of every turn of the call, in order (the measured one is the last)
    turns_ms: list[float] = field(default_factory=list)


# -- statistics -----------------------------------------------------------------------------------


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95 (linear interpolation between samples), max, mean and count of ``values``."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    a = np.asarray(values, dtype=float)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
        "mean": round(float(a.mean()), 1),
    }


def level_holds(level: dict[str, Any], target_ms: float = TARGET_P95_MS) -> bool:
    """A level holds the budget when every call was answered and p95 is within ``target_ms``."""
    p95 = level["caller_latency_ms"]["p95"]
    return level["failed"] == 0 and p95 is not None and p95 <= target_ms


def max_concurrency_within(levels: list[dict[str, Any]], target_ms: float = TARGET_P95_MS) -> int | None:
    """The highest concurrency run whose p95 holds (levels above a failing one still count if they hold)."""
    held = [lv["concurrency"] for lv in levels if level_holds(lv, target_ms)]
    return max(held) if held else None


# -- stage times from spans (or from the log) ------------------------------------------------------


def stages_from_trace(
    spans: list[ReceivedSpan], turn_index: int = 0
) -> tuple[dict[str, float], float | None, int | None]:
    """Stage durations of one complete turn (``turn_index`` in time order, -1 the last) of one call's trace.

    Pipecat's own tracing also emits spans named ``turn``/``stt``/``llm``/``tts``; the project's are
    the ones with ``turn.complete`` (turn) and ``ivrbot.stage`` (stage children).
    """
    turns = sorted(
        (s for s in spans if s.name == "turn" and s.attributes.get("turn.complete") is True),
        key=lambda s: s.start_ns,
    )
    if not turns or not -len(turns) <= turn_index < len(turns):
        return {}, None, None
    turn = turns[turn_index]
    stages: dict[str, float] = {}
    for s in spans:
        if s.parent_span_id == turn.span_id and "ivrbot.stage" in s.attributes:
            stage = STAGE_OF_SPAN.get(s.name, str(s.attributes["ivrbot.stage"]))
            stages[stage] = round(s.duration_ms, 1)
    return stages, round(turn.duration_ms, 1), turn.start_ns


def stages_from_log(events: list[dict[str, Any]]) -> tuple[dict[str, float], float | None]:
    for ev in events:
        if ev.get("event") == "turn latency":
            stages = {s: float(ev[f"{s}_ms"]) for s in STAGES if ev.get(f"{s}_ms") is not None}
            total = ev.get("total_ms")
            return stages, None if total is None else float(total)
    return {}, None


# -- resources ------------------------------------------------------------------------------------


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


def profile_plan(n_calls: int, profiles: tuple[str, ...], questions: int) -> list[tuple[str, int]]:
    """(profile, question index) of each call of a level: profiles take turns, each walks the questions."""
    if not profiles:
        raise BenchError("at least one caller profile is needed")
    k = len(profiles)
    return [(profiles[i % k], (i // k) % questions) for i in range(n_calls * k)]


# -- a level --------------------------------------------------------------------------------------


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


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The latency table and the resource table, as Markdown."""
    lines = [
        "| concurrency | calls ok/all | p50 ms | p95 ms | max ms | VAD→STT p50 | STT→LLM p50 | LLM→TTS p50 "
        "| TTS→RTP p50 | bot total p50 | last word→VAD stop p50 | load avg (1 min) | p95 ≤ 1.5 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for lv in doc["levels"]:
        cl, st = lv["caller_latency_ms"], lv["stages_ms"]
        lines.append(
            f"| {lv['concurrency']} | {lv['ok']}/{lv['calls']} | {_fmt(cl['p50'])} | {_fmt(cl['p95'])} "
            f"| {_fmt(cl['max'])} | "
            + " | ".join(_fmt(st.get(s, {}).get("p50")) for s in (*STAGES, "total", "pre_vad"))
            + f" | {lv['loadavg_start'][0]:.2f}→{lv['loadavg_end'][0]:.2f} | {'yes' if lv['holds_target'] else 'no'} |"
        )
    best = doc["max_concurrency_within_target"]
    lines += ["", f"Highest concurrency with p95 within 1.5 s: **{best if best is not None else 'none'}**", ""]
    if any(len(lv.get("profiles", {})) > 1 for lv in doc["levels"]):
        lines += [
            "| concurrency | caller profile | calls ok/all | p50 ms | p95 ms | max ms | VAD→STT p50 | VAD→STT max |",
            "|---:|:---|---:|---:|---:|---:|---:|---:|",
        ]
        for lv in doc["levels"]:
            for name, pr in lv.get("profiles", {}).items():
                cl, vs = pr["caller_latency_ms"], pr["vad_to_stt_ms"]
                lines.append(
                    f"| {lv['concurrency']} | {name} | {cl['n']}/{pr['calls']} | {_fmt(cl['p50'])} | {_fmt(cl['p95'])} "
                    f"| {_fmt(cl['max'])} | {_fmt(vs['p50'])} | {_fmt(vs['max'])} |"
                )
        lines.append("")
    names = sorted({n for lv in doc["levels"] for n in lv["resources"]})
    if names:
        lines.append("| concurrency | " + " | ".join(f"{n} CPU s (%) / peak RSS MB" for n in names) + " |")
        lines.append("|---:|" + "---:|" * len(names))
        for lv in doc["levels"]:
            cells = []
            for n in names:
                r = lv["resources"].get(n)
                cells.append("-" if r is None else f"{r['cpu_s']:.1f} ({r['cpu_pct']:.0f}%) / {r['peak_rss_mb']:.0f}")
            lines.append(f"| {lv['concurrency']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_chart(doc: dict[str, Any], path: Path) -> None:
    """Latency by concurrency (p50/p95/max, the 1.5 s line) and the median stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = doc["levels"]
    xs = [lv["concurrency"] for lv in levels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for key, style in (("p50", "o-"), ("p95", "s-"), ("max", "^--")):
        ys = [lv["caller_latency_ms"][key] for lv in levels]
        ax1.plot(xs, [np.nan if y is None else y for y in ys], style, label=key)
    ax1.axhline(TARGET_P95_MS, color="red", linestyle=":", label="1.5 s budget")
    for lv in levels:  # percentiles are over answered calls only: say how many were
        if lv["failed"]:
            y = lv["caller_latency_ms"]["max"] or TARGET_P95_MS
            ax1.annotate(f"{lv['ok']}/{lv['calls']} answered", (lv["concurrency"], y), textcoords="offset points",
                         xytext=(0, 8), ha="center", fontsize=8, color="darkred")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(xs, [str(x) for x in xs])
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("ms, caller's last word -> first reply audio")
    ax1.set_title("Caller-side latency")
    ax1.legend()
    ax1.grid(alpha=0.3)
    labels = [str(x) for x in xs]
    bottom = np.zeros(len(levels))
    names = {
        "pre_vad": "last word → VAD stop (stop_secs + input)",
        "vad_to_stt": "VAD→STT", "stt_to_llm": "STT→LLM", "llm_to_tts": "LLM→TTS", "tts_to_rtp": "TTS→RTP",
    }
    for stage, color in zip(("pre_vad", *STAGES), ("lightgray", "C0", "C1", "C2", "C3"), strict=True):
        vals = np.array([lv["stages_ms"].get(stage, {}).get("p50") or 0.0 for lv in levels])
        ax2.bar(labels, vals, bottom=bottom, label=names[stage], color=color)
        bottom += vals
    caller = [lv["caller_latency_ms"]["p50"] for lv in levels]
    ax2.plot(labels, [np.nan if c is None else c for c in caller], "kD", label="caller-side p50")
    ax2.axhline(TARGET_P95_MS, color="red", linestyle=":")
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("ms (medians; stages from the bot's spans)")
    ax2.set_title("Where the time goes")
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(f"ivrbot bench, {doc['started_at']}, load avg {doc['machine']['loadavg_start'][0]:.1f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "latency.json", "png": out / "latency.png", "md": out / "latency.md"}
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_chart(doc, paths["png"])
    header = f"`{doc['command']}` — {doc['started_at']}, {doc['machine']['cpus']} CPUs\n\n"
    paths["md"].write_text(header + markdown_table(doc), encoding="utf-8")
    return paths


# -- entry ----------------------------------------------------------------------------------------


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
            say(f"  ready in {time.monotonic() - t0:.1f} s; bot log {log_path}")
            pids = dict(config.watch)
            if bot.bot is not None and bot.bot.pid is not None:
                pids["bot"] = bot.bot.pid
            if bot.stack is not None:
                for name, proc in (("vosk", bot.stack.vosk), ("piper", bot.stack.piper),
                                   ("llama", bot.stack.llama.process)):
                    if proc.pid is not None:
                        pids[name] = proc.pid
            bench = Bench(config, bot.sip_target, receiver, pids, log_path)
            return await bench.run()


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError(f"levels must be positive integers, got {text!r}")
    return levels


def parse_watch(text: str) -> tuple[str, int]:
    name, sep, pid = text.partition("=")
    if not sep or not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def parse_profiles(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in PROFILES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown caller profile(s) {', '.join(unknown) or text!r}; choose from {', '.join(PROFILES)}"
        )
    return tuple(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ivrbot bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--target", type=parse_target, help="HOST:PORT of a running bot (default: start the local stack)")
    p.add_argument("--levels", type=parse_levels, default=DEFAULT_LEVELS, help="concurrency levels, e.g. 1,2,4,8")
    p.add_argument("--calls-per-level", type=int, default=5,
                   help="calls per level and caller profile (at least the concurrency)")
    p.add_argument("--profiles", type=parse_profiles, default=DEFAULT_PROFILES,
                   help="caller profiles, taking turns within each level: "
                        + "; ".join(f"{q.name}: {q.description}" for q in PROFILES.values()))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where latency.json/.png/.md go")
    p.add_argument("--greeting", default=None,
                   help=f"the local bot's greeting ('' for none; default {DEFAULT_GREETING!r} when a profile "
                        "waits for it, else none)")
    p.add_argument("--reply-timeout", type=float, default=20.0, help="seconds to wait for a reply")
    p.add_argument("--stagger", type=float, default=1.0, help="callers start jittered over this many seconds")
    p.add_argument("--watch", type=parse_watch, action="append", default=[],
                   help="NAME=PID of another process to measure (with --target)")
    return p


def default_greeting(profiles: tuple[str, ...]) -> str:
    """A greeting only when some caller waits for one; otherwise callers who ask at once would barge in on it."""
    return DEFAULT_GREETING if any(PROFILES[n].wait_greeting for n in profiles) else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls_per_level < 1:
        print("ivrbot bench: --calls-per-level must be at least 1", file=sys.stderr)
        return 2
    config = BenchConfig(
        levels=args.levels,
        calls_per_level=args.calls_per_level,
        target=args.target,
        out=args.out,
        greeting=default_greeting(args.profiles) if args.greeting is None else args.greeting,
        profiles=args.profiles,
        reply_timeout=args.reply_timeout,
        stagger=args.stagger,
        watch=dict(args.watch),
        command=shlex.join(["ivrbot", "bench", *(sys.argv[1:] if argv is None else argv)]),
    )
    try:
        doc = asyncio.run(run_bench(config))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"ivrbot bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    paths = write_outputs(doc, config.out)
    say(markdown_table(doc))
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if all(lv["ok"] > 0 for lv in doc["levels"]) else 1
