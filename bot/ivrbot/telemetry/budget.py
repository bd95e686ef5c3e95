"""Latency budget per stage of a turn, from the user's spec (VAD->STT 500 ms, STT->LLM 400 ms,
LLM->TTS 700 ms, caller's last word to first reply audio 1.5 s)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Stage names, in pipeline order; they are the span attribute prefixes and the metric label values.
VAD_TO_STT = "vad_to_stt"
STT_TO_LLM = "stt_to_llm"
LLM_TO_TTS = "llm_to_tts"
TTS_TO_RTP = "tts_to_rtp"
TOTAL = "total"
STAGES: tuple[str, ...] = (VAD_TO_STT, STT_TO_LLM, LLM_TO_TTS, TTS_TO_RTP)


@dataclass(frozen=True)
class LatencyBudget:
    """Seconds allowed per stage; ``None`` means that stage has no budget of its own."""

    vad_to_stt: float | None = 0.5
    stt_to_llm: float | None = 0.4
    llm_to_tts: float | None = 0.7
    tts_to_rtp: float | None = None
    total: float | None = 1.5

    def limit(self, stage: str) -> float | None:
        """The budget of ``stage`` (one of STAGES or TOTAL)."""
        limits: dict[str, float | None] = {
            VAD_TO_STT: self.vad_to_stt,
            STT_TO_LLM: self.stt_to_llm,
            LLM_TO_TTS: self.llm_to_tts,
            TTS_TO_RTP: self.tts_to_rtp,
            TOTAL: self.total,
        }
        if stage not in limits:
            raise KeyError(f"unknown stage {stage!r}")
        return limits[stage]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LatencyBudget:
        """``IVRBOT_BUDGET_<STAGE>_MS`` (e.g. ``IVRBOT_BUDGET_VAD_TO_STT_MS=500``); empty or 0 = no budget."""
        env = os.environ if env is None else env
        default = cls()
        values: dict[str, float | None] = {}
        for stage in (*STAGES, TOTAL):
            name = f"IVRBOT_BUDGET_{stage.upper()}_MS"
            raw = env.get(name)
            if raw is None:
                values[stage] = default.limit(stage)
                continue
            raw = raw.strip()
            try:
                ms = float(raw) if raw else 0.0
            except ValueError as exc:
                raise ValueError(f"{name}: not a number of milliseconds: {raw!r}") from exc
            if ms < 0:
                raise ValueError(f"{name}: negative budget {ms}")
            values[stage] = ms / 1000.0 if ms > 0 else None
        return cls(**values)
