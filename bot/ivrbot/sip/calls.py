"""Calls and their dialogs: what the user agent does once a request belongs to a call.

:class:`CallLayer` keeps the live calls over the transaction layer: the 2xx and its ACK,
requests inside a dialog (BYE, re-INVITE, OPTIONS, INFO, NOTIFY), the application's own
actions (hangup, transfer) and the end of a call, which emits ``CallEnded`` exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivrbot.logs import get_logger
from ivrbot.sdp import NoCommonCodec, SdpError, SdpOffer, parse_offer
from ivrbot.sip import states
from ivrbot.sip.config import UaConfig
from ivrbot.sip.dialog import Dialog, new_branch, parse_target
from ivrbot.sip.events import (
    Accept,
    Addr,
    CallEnded,
    CallEstablished,
    CallInfo,
    Decision,
    Event,
    IncomingReinvite,
    Reject,
    TransferOutcome,
)
from ivrbot.sip.message import SipRequest, ascii_number
from ivrbot.sip.responses import refusal, warning
from ivrbot.sip.states import CALL_TRANSITIONS, CallEvent, CallState, IstEvent, IstState
from ivrbot.sip.transaction import ClientTxn, InviteServerTxn, Retransmitter, TransactionLayer
from ivrbot.sip.validation import RequestIdentity

log = get_logger(__name__)


_SDP_ACCEPTED = ("application/sdp", "application/*", "*/*")


@dataclass
class Transfer:
    deadline: float
    target: str
    last_status: int | None = None


@dataclass
class Call:
    info: CallInfo
    invite: SipRequest
    ident: RequestIdentity
    source: Addr
    txn: InviteServerTxn
    state: CallState = CallState.PENDING
    dialog: Dialog | None = None
    reinvite: InviteServerTxn | None = None
    hangup_requested: bool = False
    transfer: Transfer | None = None

    def on(self, event: CallEvent) -> None:
        self.state = states.advance(CALL_TRANSITIONS, self.state, event)


class CallLayer(TransactionLayer):
    """The calls of one user agent, keyed by Call-ID, and the events they emit."""

    def __init__(self, config: UaConfig) -> None:
        super().__init__(config)
        self._calls: dict[str, Call] = {}
        self._events: list[Event] = []

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def contact(self) -> str:
        return f"<sip:{self.config.user_agent}@{self._host()}:{self.config.advertised_port}>"

    def _host(self) -> str:
        a = self.config.advertised_address
        return f"[{a}]" if ":" in a and not a.startswith("[") else a

    def _warning(self, code: int, text: str) -> str:
        return warning(code, self._host(), text)

    def _check_offer(self, ist: InviteServerTxn, to_tag: str, now: float) -> SdpOffer | None:
        req = ist.request
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        accept = [a.split(";")[0].strip().lower() for a in req.header_all("Accept")]
        if any(accept) and not any(a in _SDP_ACCEPTED for a in accept):
            # An SDP answer would break the offerer's own Accept (RFC 4475 3.3.15).
            self._invite_final(ist, 406, now, to_tag=to_tag, accept=True)
            return None
        if not req.body.strip():
            self._invite_final(ist, 488, now, to_tag=to_tag, extra=[("Warning", self._warning(399, "no SDP offer"))])
            return None
        if ctype and ctype != "application/sdp":
            self._invite_final(ist, 415, now, to_tag=to_tag, accept=True)
            return None
        try:
            return parse_offer(req.body)
        except NoCommonCodec as exc:
            warning = self._warning(305, str(exc))
        except SdpError as exc:
            warning = self._warning(399, f"bad SDP: {exc}")
        self._invite_final(ist, 488, now, to_tag=to_tag, extra=[("Warning", warning)])
        return None

    def _accept(self, ist: InviteServerTxn, call: Call, decision: Accept, now: float) -> None:
        data = self._send_response(
            ist.request, ist.addr, 200, to_tag=call.info.local_tag,
            contact=self.contact, allow=True, supported=True, sdp=decision.answer_sdp,
        )
        t = self.config.timers
        ist.on(IstEvent.FINAL_2XX)
        ist.last_response = data
        # RFC 3261 13.3.1.4: the 2xx is resent T1, 2T1, ... T2 until the ACK, for 64*T1.
        ist.retransmit = Retransmitter(data, ist.addr, now + t.t1, t.t1, t.t2, now + t.timeout)
        ist.expires_at = None

    def _confirm(self, call: Call, txn: InviteServerTxn, now: float) -> None:
        txn.on(IstEvent.ACK)
        if txn.retransmit is not None:
            txn.retransmit.stop()
        # Keep the key a while so late INVITE retransmissions are absorbed, not taken as new.
        txn.expires_at = now + self.config.timers.timeout
        if txn is call.reinvite:
            call.reinvite = None
            return
        call.on(CallEvent.ACK)
        log.info("sip.established", call_id=call.info.call_id)
        self._events.append(CallEstablished(call.info))
        if call.hangup_requested:
            self._send_bye(call, now, "local_bye")

    def _on_in_dialog(self, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float, to_tag: str) -> None:
        call = self._calls.get(ident.call_id)
        if (
            call is None
            or call.dialog is None
            or to_tag != call.info.local_tag
            or ident.from_tag != call.dialog.remote_tag
        ):
            if req.method == "INVITE":
                ist = self._new_ist(req, ident, addr, initial=False)
                self._invite_final(ist, 481, now)
            else:
                self._reply_non_invite(req, ident, addr, now, 481)
            return
        dialog = call.dialog
        cseq = ident.cseq
        if cseq < dialog.remote_cseq or (cseq == dialog.remote_cseq and req.method != "INVITE"):
            if req.method == "INVITE":
                ist = self._new_ist(req, ident, addr, initial=False)
                self._invite_final(ist, 500, now)
            else:
                self._reply_non_invite(req, ident, addr, now, 500, reason="CSeq Out Of Order")
            return
        dialog.remote_cseq = cseq
        if req.method == "BYE":
            self._reply_non_invite(req, ident, addr, now, 200)
            log.info("sip.remote_bye", call_id=call.info.call_id)
            self._end(call, "remote_bye")
        elif req.method == "INVITE":
            self._on_reinvite(call, req, ident, addr, now)
        elif req.method in ("OPTIONS", "INFO"):
            options = req.method == "OPTIONS"
            self._reply_non_invite(req, ident, addr, now, 200, allow=options, accept=options)
        elif req.method == "NOTIFY":
            self._on_notify(call, req, ident, addr, now)
        else:
            self._reply_non_invite(req, ident, addr, now, 405, allow=True)

    def _on_reinvite(self, call: Call, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float) -> None:
        ist = self._new_ist(req, ident, addr, initial=False)
        tag = call.info.local_tag
        busy = call.reinvite is not None or call.txn.state is IstState.ACCEPTED
        if busy:
            self._invite_final(ist, 500, now, to_tag=tag, retry_after=1)
            return
        if call.state is CallState.ENDING:
            self._invite_final(ist, 481, now, to_tag=tag)
            return
        ist.last_response = self._send_response(req, addr, 100)
        offer = self._check_offer(ist, tag, now)
        if offer is None:
            return
        call.reinvite = ist
        ist.app_deadline = now + self.config.timers.timeout
        self._events.append(IncomingReinvite(call.info, offer))

    def _answer_reinvite(self, call_id: str, decision: Decision, now: float) -> bool:
        call = self._calls.get(call_id)
        ist = call.reinvite if call is not None else None
        if call is None or ist is None or ist.state is not IstState.PROCEEDING or call.dialog is None:
            return False
        if isinstance(decision, Reject):
            code, reason, retry_after = refusal(decision)
            self._invite_final(ist, code, now, reason=reason, to_tag=call.info.local_tag, retry_after=retry_after)
            call.reinvite = None
            return True
        call.dialog.refresh_target(ist.request)
        self._accept(ist, call, decision, now)
        return True

    def _on_notify(self, call: Call, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float) -> None:
        event = (req.header("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self._reply_non_invite(req, ident, addr, now, 489)
            return
        self._reply_non_invite(req, ident, addr, now, 200)
        tr = call.transfer
        if tr is None:
            return
        status = _sipfrag_status(req.body)
        if status is not None:
            tr.last_status = status
        terminated = (req.header("Subscription-State") or "").strip().lower().startswith("terminated")
        if status is not None and 200 <= status < 300:
            self._transfer_done(call, True, f"NOTIFY {status}")
        elif status is not None and status >= 300:
            self._transfer_done(call, False, f"NOTIFY {status}")
        elif terminated:
            self._transfer_done(call, False, f"subscription terminated at {tr.last_status}")

    def _transfer_done(self, call: Call, ok: bool, detail: str) -> None:
        if call.transfer is None:
            return
        call.transfer = None
        log.info("sip.transfer_outcome", call_id=call.info.call_id, ok=ok, detail=detail)
        self._events.append(TransferOutcome(call.info, ok, detail))

    def hangup(self, call_id: str, now: float) -> bool:
        """End a call: BYE if answered (after the ACK), 480 if still ringing. False if unknown."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        if call.state is CallState.PENDING:
            self._invite_final(call.txn, 480, now, to_tag=call.info.local_tag)
            self._end(call, "local_hangup")
        elif call.state is CallState.ANSWERING:
            call.hangup_requested = True
        elif call.state is CallState.CONFIRMED:
            self._send_bye(call, now, "local_bye")
        return True

    def transfer(self, call_id: str, target: str, now: float, timeout: float) -> bool:
        """Blind REFER to ``target``; the outcome arrives as a TransferOutcome event."""
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.CONFIRMED or call.dialog is None or call.transfer is not None:
            return False
        uri = parse_target(target)
        call.transfer = Transfer(now + timeout, str(uri))
        self._send_client(call, "REFER", "refer", now, [("Refer-To", f"<{uri}>"), ("Referred-By", self.contact)])
        log.info("sip.refer", call_id=call_id, target=str(uri))
        return True

    def _send_bye(self, call: Call, now: float, reason: str) -> None:
        assert call.dialog is not None
        call.on(CallEvent.BYE_SENT)
        self._send_client(call, "BYE", "bye", now, end_reason=reason)
        log.info("sip.bye_sent", call_id=call.info.call_id, reason=reason)

    def _send_client(
        self,
        call: Call,
        method: str,
        purpose: str,
        now: float,
        headers: list[tuple[str, str]] | None = None,
        **extra: object,
    ) -> None:
        """Start a non-INVITE client transaction inside the call's dialog (BYE, REFER)."""
        assert call.dialog is not None
        branch = new_branch()
        req = call.dialog.build_request(
            method,
            branch=branch,
            via_host=self._host(),
            via_port=self.config.advertised_port,
            contact=self.contact,
            user_agent=self.config.user_agent,
            extra=headers,
        )
        dest = call.dialog.destination(call.source)
        data = req.to_bytes()
        t = self.config.timers
        self._clients[branch] = ClientTxn(
            branch, method, call.info.call_id,
            Retransmitter(data, dest, now + t.t1, t.t1, t.t2, now + t.timeout), purpose, extra=dict(extra),
        )
        self._out.append((data, dest))

    def _client_done(self, txn: ClientTxn, status: int | None) -> None:
        call = self._calls.get(txn.call_id)
        if call is None:
            return
        if txn.purpose == "bye":
            self._end(call, str(txn.extra.get("end_reason", "local_bye")))
        elif txn.purpose == "refer":
            if status is None:
                self._transfer_done(call, False, "REFER timed out")
            elif status >= 300:
                self._transfer_done(call, False, f"REFER {status}")

    def _end(self, call: Call, reason: str) -> None:
        if self._calls.get(call.info.call_id) is not call:
            return
        call.on(CallEvent.END)
        del self._calls[call.info.call_id]
        if call.transfer is not None:
            self._transfer_done(call, False, f"call ended: {reason}")
        for txn in (call.txn, call.reinvite):
            if txn is not None and txn.state is IstState.ACCEPTED and txn.retransmit is not None:
                # No more 2xx retransmissions; the key is kept briefly to absorb late copies.
                txn.retransmit.stop()
                txn.on(IstEvent.NO_ACK)
                txn.expires_at = txn.retransmit.deadline
        log.info("sip.call_ended", call_id=call.info.call_id, reason=reason)
        self._events.append(CallEnded(call.info, reason))

    def _ack_timeout(self, ist: InviteServerTxn, now: float) -> None:
        ist.on(IstEvent.NO_ACK)
        ist.expires_at = now
        call = self._calls.get(ist.call_id)
        if call is None:
            return
        if ist is call.reinvite:
            call.reinvite = None
        log.warning("sip.ack_timeout", call_id=ist.call_id)
        # RFC 3261 13.3.1.4: no ACK within 64*T1 -> the dialog is ended with a BYE (unless ours
        # is already out: a re-INVITE's 2xx can go unacknowledged while the call is ending).
        if call.state is not CallState.ENDING:
            self._send_bye(call, now, "ack_timeout")
        self._end(call, "ack_timeout")


def _sipfrag_status(body: bytes) -> int | None:
    """Status code of a message/sipfrag body ("SIP/2.0 200 OK")."""
    first = body.decode("utf-8", errors="replace").lstrip().split("\n", 1)[0].strip()
    parts = first.split()
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0" and len(parts[1]) == 3:
        return ascii_number(parts[1])
    return None
