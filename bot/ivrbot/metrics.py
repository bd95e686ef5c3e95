"""Prometheus metrics of the bot, in a registry the bot owns (not prometheus_client's global one,
so tests and several bots in one process never share counters).

Components call the small methods below (one increment each). The RTP and SIP packet counters
are better read from their owners at scrape time (``watch_rtp_session``/``watch_sip``): the media
path then does no extra work at all.
Label values are a closed, documented set (docs/observability.md): never put a Call-ID, a URI
or an address in a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ivrbot.sip.useragent import DROP_REASONS
from ivrbot.telemetry.budget import STAGES

# 50 ms .. 3 s, denser around the budgets (0.4, 0.5, 0.7, 1.0, 1.5 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.85,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    3.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: label values of ivrbot_call_transport_events_total (the transport's four events)
TRANSPORT_EVENTS = ("participant_joined", "rtp_started", "participant_left", "error")


class RtpCountersLike(Protocol):
    """What is read from an RTP session (``ivrbot.rtp.session.RtpCounters`` has these)."""

    @property
    def received(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def late(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    @property
    def sent(self) -> int: ...


class SipStatsLike(Protocol):
    """What is read from the SIP user agent (``ivrbot.sip.useragent.SipStats`` has these)."""

    @property
    def malformed(self) -> int: ...
    @property
    def untrusted(self) -> int: ...
    @property
    def internal_errors(self) -> int: ...
    @property
    def app_timeouts(self) -> int: ...
    @property
    def dropped(self) -> Mapping[str, int]: ...


# feed key -> (metric name without _total, help)
_FEEDS: dict[str, tuple[str, str]] = {
    "rtp_received": ("ivrbot_rtp_packets_received", "RTP packets received and accepted."),
    "rtp_lost": ("ivrbot_rtp_packets_lost", "RTP packets missing from the received sequence."),
    "rtp_late": ("ivrbot_rtp_packets_late", "RTP packets that arrived after their playout slot."),
    "rtp_malformed": ("ivrbot_rtp_packets_malformed", "Datagrams on an RTP port that did not parse."),
    "rtp_sent": ("ivrbot_rtp_packets_sent", "RTP packets sent."),
    "sip_malformed": ("ivrbot_sip_messages_malformed", "SIP datagrams that did not parse."),
    "sip_untrusted": ("ivrbot_sip_requests_untrusted", "SIP requests from outside IVRBOT_TRUSTED_PROXIES."),
    "sip_internal_errors": (
        "ivrbot_sip_internal_errors",
        "Bugs caught in the SIP core (the request still got a final 500); must stay 0.",
    ),
    "sip_app_timeouts": (
        "ivrbot_sip_app_timeouts",
        "INVITEs the application did not decide on within 64*T1 (answered 500).",
    ),
}
_SIP_DROPPED = ("ivrbot_sip_datagrams_dropped", "SIP datagrams that got no answer, by reason.")
_SIP_FIELDS = {
    "sip_malformed": "malformed",
    "sip_untrusted": "untrusted",
    "sip_internal_errors": "internal_errors",
    "sip_app_timeouts": "app_timeouts",
}
_RTP_FIELDS = {
    "rtp_received": "received",
    "rtp_lost": "lost",
    "rtp_late": "late",
    "rtp_malformed": "malformed",
    "rtp_sent": "sent",
}


class CounterFeeds(Collector):
    """RTP and SIP counters: totals pushed in, plus live owners read at scrape time.

    The RTP sessions and the SIP user agent already count every packet and datagram; reading
    those at scrape time costs the media path nothing. A session's final counts move into the
    totals when it is retired, so each exported counter only ever grows.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(_FEEDS, 0.0)
        self.rtp_live: dict[object, Callable[[], RtpCountersLike]] = {}
        self.sip: Callable[[], SipStatsLike] | None = None

    def add(self, key: str, n: float) -> None:
        if n < 0:
            raise ValueError(f"{key}: a counter cannot go down ({n})")
        self.totals[key] += n

    def watch_rtp(self, key: object, counters: Callable[[], RtpCountersLike]) -> None:
        self.rtp_live[key] = counters

    def retire_rtp(self, key: object) -> None:
        read = self.rtp_live.pop(key, None)
        if read is None:
            return
        c = read()
        for k, attr in _RTP_FIELDS.items():
            self.totals[k] += getattr(c, attr)

    def values(self) -> dict[str, float]:
        out = dict(self.totals)
        for read in list(self.rtp_live.values()):
            c = read()
            for k, attr in _RTP_FIELDS.items():
                out[k] += getattr(c, attr)
        if self.sip is not None:
            stats = self.sip()
            for k, attr in _SIP_FIELDS.items():
                out[k] += getattr(stats, attr)
        return out

    def dropped(self) -> dict[str, float]:
        """SIP drops by reason; every known reason is exported from the start, at 0."""
        out: dict[str, float] = dict.fromkeys(DROP_REASONS, 0.0)
        if self.sip is not None:
            for reason, n in self.sip().dropped.items():
                out[reason] = out.get(reason, 0.0) + n
        return out

    def describe(self) -> Iterable[Metric]:
        return [
            *(CounterMetricFamily(name, doc) for name, doc in _FEEDS.values()),
            CounterMetricFamily(*_SIP_DROPPED, labels=["reason"]),
        ]

    def collect(self) -> Iterable[Metric]:
        values = self.values()
        dropped = CounterMetricFamily(*_SIP_DROPPED, labels=["reason"])
        for reason, n in self.dropped().items():
            dropped.add_metric([reason], n)
        return [
            *(CounterMetricFamily(name, doc, value=values[k]) for k, (name, doc) in _FEEDS.items()),
            dropped,
        ]


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
        self.transport_events = Counter(
            "ivrbot_call_transport_events",
            "Calls' media transport events, by event: participant_joined (ACK), rtp_started (first "
            "RTP packet from the caller), participant_left (call ended), error (socket or media clock).",
            ["event"],
            registry=r,
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
        self.feeds = CounterFeeds()
        r.register(self.feeds)
        self.sidecar_errors = Counter(
            "ivrbot_sidecar_errors",
            "Failed requests or connections to a sidecar, by sidecar.",
            ["sidecar"],
            registry=r,
        )
        for event in TRANSPORT_EVENTS:
            self.transport_events.labels(event=event)
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

    def transport_event(self, event: str) -> None:
        """One of TRANSPORT_EVENTS; joined minus rtp_started counts answered calls that never got media."""
        self.transport_events.labels(event=event).inc()

    # latency
    def observe_stage(self, stage: str, seconds: float) -> None:
        """One stage of one turn (a name from ivrbot.telemetry.budget.STAGES)."""
        self.stage_latency.labels(stage=stage).observe(seconds)

    def observe_turn(self, seconds: float) -> None:
        self.turn_latency.observe(seconds)

    def budget_overrun(self, stage: str) -> None:
        self.budget_exceeded.labels(stage=stage).inc()

    # RTP and SIP counters: pushed here, or read from their owners at scrape time
    def rtp_packets_received(self, n: int = 1) -> None:
        self.feeds.add("rtp_received", n)

    def rtp_packets_lost(self, n: int = 1) -> None:
        self.feeds.add("rtp_lost", n)

    def rtp_packets_late(self, n: int = 1) -> None:
        self.feeds.add("rtp_late", n)

    def rtp_packets_malformed(self, n: int = 1) -> None:
        self.feeds.add("rtp_malformed", n)

    def rtp_packets_sent(self, n: int = 1) -> None:
        self.feeds.add("rtp_sent", n)

    def sip_message_malformed(self, n: int = 1) -> None:
        self.feeds.add("sip_malformed", n)

    def sip_request_untrusted(self, n: int = 1) -> None:
        self.feeds.add("sip_untrusted", n)

    def watch_rtp_session(self, key: object, counters: Callable[[], RtpCountersLike]) -> None:
        """Read a live session's counters at each scrape (``lambda: session.counters``)."""
        self.feeds.watch_rtp(key, counters)

    def retire_rtp_session(self, key: object) -> None:
        """The session ended: its last counts are kept in the totals, its reader dropped."""
        self.feeds.retire_rtp(key)

    def watch_sip(self, stats: Callable[[], SipStatsLike]) -> None:
        """Read the SIP user agent's counters (``lambda: ua.stats``) at each scrape."""
        self.feeds.sip = stats

    def watch_process(self, tasks: Callable[[], int], ports_leased: Callable[[], int]) -> None:
        """Gauges read at scrape time; a soak run watches them for growth across calls."""
        Gauge("ivrbot_asyncio_tasks", "asyncio tasks alive in the bot process.", registry=self.registry
              ).set_function(lambda: float(tasks()))
        Gauge("ivrbot_rtp_ports_leased", "RTP/RTCP port pairs currently leased to calls.", registry=self.registry
              ).set_function(lambda: float(ports_leased()))

    def sidecar_error(self, sidecar: str) -> None:
        """``sidecar`` is one of vosk, piper, llama."""
        self.sidecar_errors.labels(sidecar=sidecar).inc()

    def render(self) -> bytes:
        """The text exposition format, as served on /metrics."""
        return generate_latest(self.registry)
