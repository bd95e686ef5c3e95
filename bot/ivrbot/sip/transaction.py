"""SIP transactions over UDP (RFC 3261 section 17, RFC 6026): records, timers and the layer
that keeps them.

The records know when a datagram is due again and when they expire. :class:`TransactionLayer`
holds the live ones, sends responses in the right transaction kind, absorbs retransmissions and
runs the timers; what a timer means for a call it leaves to its subclass (the user agent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Unpack

from ivrbot.sip import states
from ivrbot.sip.address import parse_via
from ivrbot.sip.config import SipStats, UaConfig
from ivrbot.sip.config import SipTimers as SipTimers
from ivrbot.sip.events import Addr
from ivrbot.sip.message import SipParseError, SipRequest, SipResponse
from ivrbot.sip.responses import ResponseOptions, build_response
from ivrbot.sip.states import ClientEvent, ClientState, IstEvent, IstState
from ivrbot.sip.validation import RequestIdentity

TxnKey = tuple[str, ...]

MAGIC_COOKIE = "z9hG4bK"


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


class TransactionLayer:
    """The live server and client transactions of one user agent, and what they send."""

    def __init__(self, config: UaConfig) -> None:
        self.config = config
        self.stats = SipStats()
        self._ists: dict[TxnKey, InviteServerTxn] = {}
        self._nists: dict[TxnKey, NonInviteServerTxn] = {}
        self._clients: dict[str, ClientTxn] = {}
        self._out: list[tuple[bytes, Addr]] = []

    def take_datagrams(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    @property
    def open_transactions(self) -> int:
        """Server transactions not yet freed (each is freed by its own timer)."""
        return len(self._ists) + len(self._nists)

    def _send_response(self, req: SipRequest, addr: Addr, code: int, **opts: Unpack[ResponseOptions]) -> bytes:
        data = build_response(req, code, source=addr, server=self.config.user_agent, **opts).to_bytes()
        # Responses go back where the request came from (symmetric, as rport asks and OpenSIPS expects).
        self._out.append((data, addr))
        self.stats.responses[code] += 1
        return data

    def _reply_non_invite(
        self,
        req: SipRequest,
        ident: RequestIdentity,
        addr: Addr,
        now: float,
        code: int,
        **opts: Unpack[ResponseOptions],
    ) -> None:
        data = self._send_response(req, addr, code, **opts)
        key = server_key(ident)
        self._nists[key] = NonInviteServerTxn(key, addr, data, now + self.config.timers.timeout)

    def _invite_final(self, ist: InviteServerTxn, code: int, now: float, **opts: Unpack[ResponseOptions]) -> None:
        """Send a non-2xx final: retransmitted (Timer G) until ACK, forgotten after Timer H."""
        data = self._send_response(ist.request, ist.addr, code, **opts)
        t = self.config.timers
        ist.on(IstEvent.FINAL_ERROR)
        ist.last_response = data
        ist.app_deadline = None
        ist.retransmit = Retransmitter(data, ist.addr, now + t.t1, t.t1, t.t2, now + t.timeout)
        ist.expires_at = now + t.timeout

    def _new_ist(self, req: SipRequest, ident: RequestIdentity, addr: Addr, initial: bool) -> InviteServerTxn:
        key = server_key(ident)
        ist = InviteServerTxn(key, req, addr, ident.call_id, ident.cseq, initial=initial)
        self._ists[key] = ist
        return ist

    def _retransmission(self, ident: RequestIdentity, addr: Addr) -> bool:
        """A request matching a live server transaction: its last response again, nothing else."""
        key = server_key(ident)
        nist = self._nists.get(key)
        if nist is not None:
            self.stats.retransmissions += 1
            self._out.append((nist.last_response, addr))
            return True
        ist = self._ists.get(key)
        if ist is not None:
            self.stats.retransmissions += 1
            if ist.last_response is not None and ist.state is not IstState.CONFIRMED:
                self._out.append((ist.last_response, addr))
            return True
        return False

    def _txn_deadlines(self) -> list[float]:
        times: list[float] = []
        for ist in self._ists.values():
            if ist.retransmit is not None and ist.retransmit.active:
                times.append(min(ist.retransmit.next_at, ist.retransmit.deadline))
            if ist.expires_at is not None:
                times.append(ist.expires_at)
        times.extend(n.expires_at for n in self._nists.values())
        for c in self._clients.values():
            times.append(min(c.retransmit.next_at, c.retransmit.deadline))
        return times

    def _on_response(self, resp: SipResponse, now: float) -> None:
        vias = resp.header_all("Via")
        try:
            branch = parse_via(vias[0]).branch if vias else None
        except SipParseError:
            branch = None
        txn = self._clients.get(branch or "")
        if txn is None:
            self.stats.stray += 1
            self.stats.dropped["stray"] += 1
            return
        if resp.status < 200:
            txn.on(ClientEvent.PROVISIONAL)
            txn.retransmit.interval = self.config.timers.t2 / 2  # next doubling lands on T2
            return
        txn.on(ClientEvent.FINAL)
        del self._clients[txn.branch]
        self._client_done(txn, resp.status)

    def _tick_transactions(self, now: float) -> None:
        """Retransmit what is due; free what expired; report 2xx never ACKed and timed-out clients."""
        for key, ist in list(self._ists.items()):
            r = ist.retransmit
            if ist.state is IstState.ACCEPTED and r is not None and r.expired(now):
                r.stop()
                self._ack_timeout(ist, now)
            elif r is not None and r.active and r.due(now):
                if ist.state is IstState.COMPLETED and r.expired(now):
                    r.stop()
                else:
                    self._out.append((r.payload, r.addr))
                    self.stats.retransmits_sent += 1
                    r.fire(now)
            if ist.expires_at is not None and now >= ist.expires_at:
                ist.on(IstEvent.EXPIRE)
                del self._ists[key]
        for nkey, nist in list(self._nists.items()):
            if now >= nist.expires_at:
                del self._nists[nkey]
        for branch, txn in list(self._clients.items()):
            r = txn.retransmit
            if r.expired(now):
                txn.on(ClientEvent.TIMEOUT)
                del self._clients[branch]
                self._client_done(txn, None)
            elif r.due(now):
                self._out.append((r.payload, r.addr))
                self.stats.retransmits_sent += 1
                if txn.state is ClientState.PROCEEDING:
                    r.interval = self.config.timers.t2 / 2
                r.fire(now)

    def _ack_timeout(self, ist: InviteServerTxn, now: float) -> None:
        """A 2xx was never ACKed within 64*T1."""
        raise NotImplementedError

    def _client_done(self, txn: ClientTxn, status: int | None) -> None:
        """A client transaction ended: final ``status``, or None when Timer F fired."""
        raise NotImplementedError
