"""SIP transaction records and timers over UDP (RFC 3261 section 17, RFC 6026).

Plain state holders driven by :mod:`ivrbot.sip.useragent`: they know when a datagram is due
again and when they expire, never how to send it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivrbot.sip.address import Via
from ivrbot.sip.events import Addr
from ivrbot.sip.message import SipRequest

TxnKey = tuple[str, ...]

MAGIC_COOKIE = "z9hG4bK"


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


def server_key(request: SipRequest, top_via: Via, method: str | None = None) -> TxnKey:
    """RFC 3261 17.2.3 matching key; ACK and CANCEL pass ``method="INVITE"`` to find the INVITE."""
    m = method or request.method
    branch = top_via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, f"{top_via.host}:{top_via.port}", m)
    # RFC 2543 peers: no usable branch, fall back to dialog + CSeq identity.
    cseq = (request.header("CSeq") or "").split()
    from_ = request.header("From") or ""
    return ("2543", request.header("Call-ID") or "", cseq[0] if cseq else "", m, from_, str(top_via))


@dataclass
class Retransmitter:
    """Resends ``payload`` at ``interval``, doubling up to ``cap``, until stopped or ``deadline``."""

    payload: bytes
    addr: Addr
    next_at: float
    interval: float
    cap: float
    deadline: float
    active: bool = True

    def due(self, now: float) -> bool:
        return self.active and now >= self.next_at

    def fire(self, now: float) -> None:
        # Scheduled from the previous due time, not from ``now``: a late tick adds no drift.
        self.interval = min(self.interval * 2, self.cap)
        self.next_at = max(self.next_at + self.interval, now)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def stop(self) -> None:
        self.active = False


@dataclass
class InviteServerTxn:
    """An INVITE server transaction; ``state`` is proceeding, accepted, completed or confirmed."""

    key: TxnKey
    request: SipRequest
    addr: Addr
    call_id: str
    cseq: int
    state: str = "proceeding"
    last_response: bytes | None = None
    retransmit: Retransmitter | None = None
    expires_at: float | None = None
    initial: bool = True
    #: while proceeding: when the application's decision is overdue (None: not waiting for it)
    app_deadline: float | None = None


@dataclass
class NonInviteServerTxn:
    """Keeps the final response so a retransmitted request gets it again (Timer J)."""

    key: TxnKey
    addr: Addr
    last_response: bytes
    expires_at: float


@dataclass
class ClientTxn:
    """A non-INVITE client transaction the bot started (BYE, REFER): Timer E resends, F gives up."""

    branch: str
    method: str
    call_id: str
    retransmit: Retransmitter
    purpose: str
    state: str = "trying"
    extra: dict[str, object] = field(default_factory=dict)
