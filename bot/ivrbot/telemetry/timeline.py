"""The moments of one turn and what they say about latency: a plain object, no spans, no I/O.

All times are seconds on the bot's monotonic clock (``time.monotonic()``). A turn opens when the
caller stops speaking and is complete when the first reply RTP packet leaves; each moment is
kept only the first time it is reported, and only in order (a first LLM token reported before
the final transcript is a token of an earlier reply and is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivrbot.telemetry.budget import LLM_TO_TTS, STT_TO_LLM, TOTAL, TTS_TO_RTP, VAD_TO_STT, LatencyBudget

# Moment names, in the order a turn passes through them.
VAD_STOP = "vad_stop"
STT_FINAL = "stt_final"
LLM_FIRST_TOKEN = "llm_first_token"
TTS_FIRST_AUDIO = "tts_first_audio"
RTP_FIRST_PACKET = "rtp_first_packet"
MOMENTS: tuple[str, ...] = (VAD_STOP, STT_FINAL, LLM_FIRST_TOKEN, TTS_FIRST_AUDIO, RTP_FIRST_PACKET)

# stage -> (from moment, to moment)
STAGE_BOUNDS: dict[str, tuple[str, str]] = {
    VAD_TO_STT: (VAD_STOP, STT_FINAL),
    STT_TO_LLM: (STT_FINAL, LLM_FIRST_TOKEN),
    LLM_TO_TTS: (LLM_FIRST_TOKEN, TTS_FIRST_AUDIO),
    TTS_TO_RTP: (TTS_FIRST_AUDIO, RTP_FIRST_PACKET),
    TOTAL: (VAD_STOP, RTP_FIRST_PACKET),
}


@dataclass(frozen=True)
class Overrun:
    """A stage that took longer than its budget."""

    stage: str
    duration_s: float
    budget_s: float

    @property
    def over_ms(self) -> float:
        return (self.duration_s - self.budget_s) * 1000.0


@dataclass
class TurnTimeline:
    """Moments of turn ``number``; ``mark`` is idempotent and order-checked."""

    number: int
    moments: dict[str, float] = field(default_factory=dict)

    def mark(self, moment: str, t: float) -> bool:
        """Record ``moment`` at ``t``; False (and nothing kept) if already set or out of order."""
        if moment not in MOMENTS:
            raise KeyError(f"unknown moment {moment!r}")
        if moment in self.moments:
            return False
        index = MOMENTS.index(moment)
        if index > 0 and MOMENTS[index - 1] not in self.moments:
            return False
        if self.moments and t < max(self.moments.values()):
            return False
        self.moments[moment] = t
        return True

    def has(self, moment: str) -> bool:
        return moment in self.moments

    @property
    def start(self) -> float | None:
        return self.moments.get(VAD_STOP)

    @property
    def complete(self) -> bool:
        return RTP_FIRST_PACKET in self.moments

    def duration(self, stage: str) -> float | None:
        """Seconds spent in ``stage`` (a STAGE_BOUNDS key), None while it is not finished."""
        begin, end = STAGE_BOUNDS[stage]
        if begin not in self.moments or end not in self.moments:
            return None
        return self.moments[end] - self.moments[begin]

    def durations(self) -> dict[str, float]:
        """Every finished stage (and ``total`` once complete) in seconds."""
        out: dict[str, float] = {}
        for stage in STAGE_BOUNDS:
            d = self.duration(stage)
            if d is not None:
                out[stage] = d
        return out

    def overruns(self, budget: LatencyBudget) -> list[Overrun]:
        """Finished stages that exceeded their budget, in pipeline order, ``total`` last."""
        found: list[Overrun] = []
        for stage, d in self.durations().items():
            limit = budget.limit(stage)
            if limit is not None and d > limit:
                found.append(Overrun(stage, d, limit))
        return found
