"""Prometheus metrics of the bot, in a registry the bot owns (not prometheus_client's global one,
so tests and several bots in one process never share counters).

Components call the small methods below; each is one lock-protected increment (about a
microsecond), cheap enough per RTP packet, and the RTP layer may also add counts in batches.
Label values are a closed, documented set (docs/observability.md): never put a Call-ID, a URI
or an address in a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ivrbot.telemetry.budget import STAGES

# 50 ms .. 3 s, denser around the budgets (0.4, 0.5, 0.7, 1.0, 1.5 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the bot exports, and the calls that move them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._active = 0
        self.calls_active = Gauge("ivrbot_calls_active", "Answered calls not yet ended.", registry=r)
        self.calls_answered = Counter("ivrbot_calls_answered", "INVITEs answered with 200 OK.", registry=r)
        self.calls_rejected = Counter(
            "ivrbot_calls_rejected",
            "INVITEs answered with a final error (or cancelled) instead of 200 OK, by reason.",
            ["reason"],
            registry=r,
        )
        self.calls_ended = Counter(
            "ivrbot_calls_ended", "Answered calls that ended, by reason.", ["reason"], registry=r
        )
        self.stage_latency = Histogram(
            "ivrbot_stage_latency_seconds",
            "Time spent in one stage of a turn (vad_to_stt, stt_to_llm, llm_to_tts, tts_to_rtp).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_latency = Histogram(
            "ivrbot_turn_latency_seconds",
            "Caller stopped speaking (VAD) to first reply RTP packet sent.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.budget_exceeded = Counter(
            "ivrbot_latency_budget_exceeded",
            "Turns in which a stage (or the total) exceeded its latency budget, by stage.",
            ["stage"],
            registry=r,
        )
        self.rtp_received = Counter(
            "ivrbot_rtp_packets_received", "RTP packets received and accepted.", registry=r
        )
        self.rtp_lost = Counter(
            "ivrbot_rtp_packets_lost", "RTP packets missing from the received sequence.", registry=r
        )
        self.rtp_late = Counter(
            "ivrbot_rtp_packets_late", "RTP packets that arrived after their playout slot.", registry=r
        )
        self.rtp_malformed = Counter(
            "ivrbot_rtp_packets_malformed", "UDP datagrams on an RTP port that did not parse.", registry=r
        )
        self.rtp_sent = Counter("ivrbot_rtp_packets_sent", "RTP packets sent.", registry=r)
        self.sip_malformed = Counter(
            "ivrbot_sip_messages_malformed", "SIP datagrams that did not parse.", registry=r
        )
        self.sip_untrusted = Counter(
            "ivrbot_sip_requests_untrusted", "SIP requests from outside IVRBOT_TRUSTED_PROXIES.", registry=r
        )
        self.sidecar_errors = Counter(
            "ivrbot_sidecar_errors", "Failed requests or connections to a sidecar, by sidecar.", ["sidecar"],
            registry=r,
        )
        for stage in STAGES:  # export zero-valued series so dashboards see every stage from the start
            self.stage_latency.labels(stage=stage)

    # calls
    def call_answered(self) -> None:
        """200 OK sent to an INVITE: the call counts as active until ``call_ended``."""
        self.calls_answered.inc()
        self._active += 1
        self.calls_active.set(self._active)

    def call_rejected(self, reason: str) -> None:
        """INVITE ended without 200 OK: busy, draining, no_codec, untrusted, cancelled, malformed, error."""
        self.calls_rejected.labels(reason=reason).inc()

    def call_ended(self, reason: str) -> None:
        """An answered call ended: caller_bye, bot_bye, transfer, timeout, media_timeout, drain, error."""
        self.calls_ended.labels(reason=reason).inc()
        self._active = max(0, self._active - 1)
        self.calls_active.set(self._active)

    # latency
    def observe_stage(self, stage: str, seconds: float) -> None:
        """One stage of one turn (a name from ivrbot.telemetry.budget.STAGES)."""
        self.stage_latency.labels(stage=stage).observe(seconds)

    def observe_turn(self, seconds: float) -> None:
        self.turn_latency.observe(seconds)

    def budget_overrun(self, stage: str) -> None:
        self.budget_exceeded.labels(stage=stage).inc()

    # RTP (per packet or in batches)
    def rtp_packets_received(self, n: int = 1) -> None:
        self.rtp_received.inc(n)

    def rtp_packets_lost(self, n: int = 1) -> None:
        self.rtp_lost.inc(n)

    def rtp_packets_late(self, n: int = 1) -> None:
        self.rtp_late.inc(n)

    def rtp_packets_malformed(self, n: int = 1) -> None:
        self.rtp_malformed.inc(n)

    def rtp_packets_sent(self, n: int = 1) -> None:
        self.rtp_sent.inc(n)

    # SIP and sidecars
    def sip_message_malformed(self) -> None:
        self.sip_malformed.inc()

    def sip_request_untrusted(self) -> None:
        self.sip_untrusted.inc()

    def sidecar_error(self, sidecar: str) -> None:
        """``sidecar`` is one of vosk, piper, llama."""
        self.sidecar_errors.labels(sidecar=sidecar).inc()

    def render(self) -> bytes:
        """The text exposition format, as served on /metrics."""
        return generate_latest(self.registry)
