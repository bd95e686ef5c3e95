"""What the user agent is configured with (timers, addresses) and what it counts for /metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SipTimers:
    """RFC 3261 timer base values (seconds): T1 RTT estimate, T2 cap, T4 network lifetime."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: Timer B/F/H/J/L."""
        return 64 * self.t1


@dataclass
class UaConfig:
    advertised_address: str
    advertised_port: int
    trusted_proxies: tuple[str, ...] = ()
    user_agent: str = "ivrbot"
    timers: SipTimers = field(default_factory=SipTimers)
    drain_retry_after: int = 30


@dataclass
class SipStats:
    """Counters for /metrics: every refused, malformed or absorbed datagram lands in one."""

    received: int = 0
    malformed: int = 0
    untrusted: int = 0
    retransmissions: int = 0
    retransmits_sent: int = 0
    stray: int = 0
    internal_errors: int = 0
    app_timeouts: int = 0
    calls: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    rejected: Counter[int] = field(default_factory=Counter)
    #: datagrams that got no answer, by reason: malformed, untrusted, stray (DROP_REASONS)
    dropped: Counter[str] = field(default_factory=Counter)


DROP_REASONS = ("malformed", "untrusted", "stray")
