"""One call's result and the statistics over a level: percentiles, stage times, the budget verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ivrbot_tools.otlp_receiver import ReceivedSpan

#: the user's budget from the caller's last word to the first reply audio
TARGET_P95_MS = 1500.0
STAGES: tuple[str, ...] = ("vad_to_stt", "stt_to_llm", "llm_to_tts", "tts_to_rtp")
STAGE_OF_SPAN = {"stt": "vad_to_stt", "llm": "stt_to_llm", "tts": "llm_to_tts", "rtp.send": "tts_to_rtp"}

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
