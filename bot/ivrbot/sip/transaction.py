"""SIP transaction records and timers over UDP (RFC 3261 section 17, RFC 6026).

Plain state holders driven by :mod:`ivrbot.sip.useragent`: they know when a datagram is due
again and when they expire, never how to send it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivrbot.sip import states
from ivrbot.sip.message import SipRequest
from ivrbot.sip.validation import RequestIdentity

Addr = tuple[str, int]
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


def server_key(ident: RequestIdentity, method: str | None = None) -> TxnKey:
    """RFC 3261 17.2.3 matching key; ACK and CANCEL pass ``method="INVITE"`` to find the INVITE."""
    m = method or ident.method
    via = ident.via
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, f"{via.host}:{via.port}", m)
    # RFC 2543 peers: no usable branch, fall back to dialog + CSeq identity.
    return ("2543", ident.call_id, str(ident.cseq), m, str(ident.from_), str(via))


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
    """An INVITE server transaction; its states and their order are ``states.IST_TRANSITIONS``."""

    key: TxnKey
    request: SipRequest
    addr: Addr
    call_id: str
    cseq: int
    state: states.IstState = states.IstState.PROCEEDING
    last_response: bytes | None = None
    retransmit: Retransmitter | None = None
    expires_at: float | None = None
    initial: bool = True
    #: while proceeding: when the application's decision is overdue (None: not waiting for it)
    app_deadline: float | None = None

    def on(self, event: states.IstEvent) -> None:
        self.state = states.advance(states.IST_TRANSITIONS, self.state, event)


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
    state: states.ClientState = states.ClientState.TRYING
    extra: dict[str, object] = field(default_factory=dict)

    def on(self, event: states.ClientEvent) -> None:
        self.state = states.advance(states.CLIENT_TRANSITIONS, self.state, event)
