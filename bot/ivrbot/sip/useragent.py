"""The bot's SIP user agent, sans-IO: datagrams and clock ticks in, datagrams and events out.

``feed(data, addr, now)`` and ``tick(now)`` never raise; what they produce is collected with
``take_datagrams()`` and ``take_events()``. The application's decisions come back through
``answer_invite`` / ``answer_reinvite``; its own actions through ``hangup`` / ``transfer``.

Three layers, one class each: :class:`~ivrbot.sip.transaction.TransactionLayer` (transactions
and their timers), :class:`~ivrbot.sip.calls.CallLayer` (calls and dialogs) and, here, the front
door: trust, parsing and validation, dispatch, new calls, and recovery from the core's own bugs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ivrbot.logs import get_logger
from ivrbot.sip.calls import Call, CallLayer
from ivrbot.sip.config import DROP_REASONS as DROP_REASONS
from ivrbot.sip.config import SipStats as SipStats
from ivrbot.sip.config import UaConfig as UaConfig
from ivrbot.sip.dialog import Dialog, new_tag
from ivrbot.sip.events import Addr, CallInfo, Decision, IncomingCall, Reject
from ivrbot.sip.message import SipParseError, SipRequest, SipResponse, is_keepalive, parse_message
from ivrbot.sip.responses import refusal
from ivrbot.sip.states import CallEvent, CallState, IstEvent, IstState
from ivrbot.sip.transaction import InviteServerTxn, server_key
from ivrbot.sip.validation import KNOWN_METHODS, URI_SCHEMES, RequestIdentity, answerable, validate

log = get_logger(__name__)


_NO_DIALOG_METHODS = {"BYE", "NOTIFY", "INFO", "UPDATE", "PRACK"}


class UserAgent(CallLayer):
    """UAS core for the bot. One instance per listening socket."""

    def __init__(self, config: UaConfig) -> None:
        super().__init__(config)
        self.draining = False
        self._networks = [ipaddress.ip_network(c.strip(), strict=False) for c in config.trusted_proxies if c.strip()]
        self._logged_untrusted: set[str] = set()
        #: the request being handled, so that a bug still gets it a final answer
        self._inflight: tuple[SipRequest, RequestIdentity, Addr] | None = None

    def start_draining(self) -> None:
        self.draining = True

    def feed(self, data: bytes, addr: Addr, now: float) -> None:
        """One received datagram. Never raises: a bug is counted as ``internal_errors`` and every
        server transaction it left without a final response gets 500 (:meth:`_recover`)."""
        self.stats.received += 1
        self._inflight = None
        try:
            self._feed(data, addr, now)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("sip.internal_error", source=f"{addr[0]}:{addr[1]}", size=len(data))
            self._recover(now)
        finally:
            self._inflight = None

    def tick(self, now: float) -> None:
        try:
            self._tick(now)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("sip.internal_error_in_timers")
            self._recover(now)

    def _recover(self, now: float) -> None:
        """After a bug: the request being handled and every INVITE transaction nobody will answer
        (not waiting for the application) get a final 500, so each one still ends and expires."""
        try:
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                req, ident, addr = inflight
                key = server_key(ident)
                if req.method == "INVITE" and key not in self._ists:
                    self._new_ist(req, ident, addr, initial=False)
                elif req.method not in ("INVITE", "ACK") and key not in self._nists:
                    self._reply_non_invite(req, ident, addr, now, 500, to_tag=new_tag())
            for ist in list(self._ists.values()):
                if ist.state is IstState.PROCEEDING and ist.app_deadline is None:
                    self._fail_ist(ist, now, "error")
        except Exception:
            self.stats.internal_errors += 1
            log.exception("sip.internal_error_in_recovery")

    def _fail_ist(self, ist: InviteServerTxn, now: float, reason: str) -> None:
        """500 to an INVITE left proceeding; the call it would have made (if any) ends."""
        self._invite_final(ist, 500, now)
        call = self._calls.get(ist.call_id)
        if call is None:
            return
        if call.txn is ist:
            self._end(call, reason)
        elif call.reinvite is ist:
            call.reinvite = None

    def next_deadline(self) -> float | None:
        times = self._txn_deadlines()
        for ist in self._ists.values():
            if ist.app_deadline is not None and ist.state is IstState.PROCEEDING:
                times.append(ist.app_deadline)
        times.extend(c.transfer.deadline for c in self._calls.values() if c.transfer is not None)
        return min(times) if times else None

    def _trusted(self, addr: Addr) -> bool:
        if not self._networks:
            return True
        try:
            ip = ipaddress.ip_address(addr[0].split("%")[0])
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self._networks)

    def _feed(self, data: bytes, addr: Addr, now: float) -> None:
        if is_keepalive(data):
            return
        trusted = self._trusted(addr)
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            if not trusted:
                self._untrusted(addr, None)
                return
            self._malformed(exc.reason, exc.status, exc.partial, addr)
            return
        if not trusted:
            self._untrusted(addr, msg)
            return
        if isinstance(msg, SipResponse):
            self._on_response(msg, now)
            return
        assert isinstance(msg, SipRequest)
        try:
            ident = validate(msg)
        except SipParseError as exc:
            self._malformed(exc.reason, exc.status, msg, addr)
            return
        self._on_request(msg, ident, addr, now)

    def _untrusted(self, addr: Addr, msg: SipRequest | SipResponse | None) -> None:
        self.stats.untrusted += 1
        if addr[0] not in self._logged_untrusted and len(self._logged_untrusted) < 1024:
            self._logged_untrusted.add(addr[0])
            log.warning("sip.untrusted_source", source=addr[0])
        if isinstance(msg, SipRequest) and msg.method != "ACK" and answerable(msg):
            self._send_response(msg, addr, 403, to_tag=new_tag())
        else:
            self.stats.dropped["untrusted"] += 1

    def _malformed(self, reason: str, status: int, partial: object, addr: Addr) -> None:
        self.stats.malformed += 1
        answered = (
            isinstance(partial, SipRequest) and partial.method != "ACK" and answerable(partial)
        )
        log.warning("sip.malformed", source=f"{addr[0]}:{addr[1]}", reason=reason, answered=answered)
        if answered:
            assert isinstance(partial, SipRequest)
            self._send_response(
                partial, addr, status, to_tag=new_tag(), extra=[("Warning", self._warning(399, reason))]
            )
        else:
            self.stats.dropped["malformed"] += 1

    def _on_request(self, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float) -> None:
        if req.method == "ACK":
            self._on_ack(req, ident, now)
            return
        if self._retransmission(ident, addr):
            return
        self._inflight = (req, ident, addr)
        # Max-Forwards 0 is not checked: it only limits proxies; a UAS processes the request
        # (RFC 4475 3.3.11).
        if req.method not in KNOWN_METHODS:
            self._reply_non_invite(req, ident, addr, now, 501, to_tag=new_tag(), allow=True)
            return
        if ident.uri.scheme not in URI_SCHEMES:
            self._reply_final(req, ident, addr, now, 416)
            return
        if req.method not in ("CANCEL",):
            require = [t.strip() for v in req.header_all("Require") for t in v.split(",") if t.strip()]
            if require:
                self._reply_final(req, ident, addr, now, 420, extra=[("Unsupported", ", ".join(require))])
                return
        if req.method == "CANCEL":
            self._on_cancel(req, ident, addr, now)
            return
        to_tag = ident.to_tag
        if to_tag:
            self._on_in_dialog(req, ident, addr, now, to_tag)
            return
        if req.method == "INVITE":
            self._on_invite(req, ident, addr, now)
        elif req.method == "OPTIONS":
            self._on_options(req, ident, addr, now)
        elif req.method in _NO_DIALOG_METHODS:
            self._reply_non_invite(req, ident, addr, now, 481, to_tag=new_tag())
        else:
            self._reply_non_invite(req, ident, addr, now, 405, to_tag=new_tag(), allow=True)

    def _on_options(self, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float) -> None:
        if self.draining:
            self._reply_non_invite(
                req, ident, addr, now, 503, to_tag=new_tag(),
                retry_after=self.config.drain_retry_after,
            )
            return
        self._reply_non_invite(
            req, ident, addr, now, 200, to_tag=new_tag(),
            allow=True, accept=True, supported=True,
        )

    def _reply_final(
        self,
        req: SipRequest,
        ident: RequestIdentity,
        addr: Addr,
        now: float,
        code: int,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """A final refusal before any processing, in the transaction kind the method needs."""
        if req.method == "INVITE":
            ist = self._new_ist(req, ident, addr, initial=False)
            self._invite_final(ist, code, now, to_tag=new_tag(), extra=extra or [])
        else:
            self._reply_non_invite(req, ident, addr, now, code, to_tag=new_tag(), extra=extra or [])

    def _on_invite(self, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float) -> None:
        call_id = ident.call_id
        ist = self._new_ist(req, ident, addr, initial=True)
        tag = new_tag()
        if call_id in self._calls:
            self._invite_final(ist, 482, now, to_tag=tag)
            self.stats.rejected[482] += 1
            return
        if self.draining:
            self._invite_final(
                ist, 503, now, to_tag=tag, retry_after=self.config.drain_retry_after
            )
            self.stats.rejected[503] += 1
            return
        ist.last_response = self._send_response(req, addr, 100)
        offer = self._check_offer(ist, tag, now)
        if offer is None:
            self.stats.rejected[self._last_code(ist)] += 1
            log.info("sip.invite_refused", call_id=call_id, code=self._last_code(ist))
            return
        info = CallInfo(
            call_id=call_id,
            from_uri=str(ident.from_.uri),
            from_tag=ident.from_tag,
            to_uri=str(ident.to.uri),
            local_tag=tag,
            request_uri=req.uri,
            remote_addr=addr,
            headers=tuple(req.headers),
        )
        self._calls[call_id] = Call(info, req, ident, addr, ist)
        self.stats.calls += 1
        log.info("sip.invite", call_id=call_id, source=f"{addr[0]}:{addr[1]}", from_uri=info.from_uri)
        ist.app_deadline = now + self.config.timers.timeout
        self._events.append(IncomingCall(info, offer))

    @staticmethod
    def _last_code(ist: InviteServerTxn) -> int:
        if ist.last_response is None:
            return 0
        return int(ist.last_response[8:11])

    def answer_invite(self, call_id: str, decision: Decision, now: float) -> bool:
        """Apply the application's decision on a new call; False if the call is gone (cancelled).

        Never raises: if applying it fails, the INVITE gets 500 and the call ends ("error").
        """
        return self._guarded(call_id, now, lambda: self._answer_invite(call_id, decision, now))

    def _guarded(self, call_id: str, now: float, apply: Callable[[], bool]) -> bool:
        try:
            return apply()
        except Exception:
            self.stats.internal_errors += 1
            log.exception("sip.internal_error_in_answer", call_id=call_id)
            call = self._calls.get(call_id)
            try:
                for ist in (call.txn, call.reinvite) if call is not None else ():
                    if ist is not None and ist.state is IstState.PROCEEDING:
                        self._fail_ist(ist, now, "error")
            except Exception:
                self.stats.internal_errors += 1
                log.exception("sip.internal_error_in_recovery", call_id=call_id)
            self._recover(now)
            return False

    def _answer_invite(self, call_id: str, decision: Decision, now: float) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.PENDING:
            return False
        ist = call.txn
        if isinstance(decision, Reject):
            code, reason, retry_after = refusal(decision)
            self._invite_final(ist, code, now, reason=reason, to_tag=call.info.local_tag, retry_after=retry_after)
            self.stats.rejected[code] += 1
            self._end(call, "rejected")
            return True
        call.dialog = Dialog.from_invite(call.invite, call.ident, call.info.local_tag)
        self._accept(ist, call, decision, now)
        call.on(CallEvent.ACCEPT)
        return True

    def _on_cancel(self, req: SipRequest, ident: RequestIdentity, addr: Addr, now: float) -> None:
        ist = self._ists.get(server_key(ident, "INVITE"))
        if ist is None:
            self._reply_non_invite(req, ident, addr, now, 481, to_tag=new_tag())
            return
        call = self._calls.get(ist.call_id)
        tag = call.info.local_tag if call is not None and call.txn is ist else new_tag()
        self._reply_non_invite(req, ident, addr, now, 200, to_tag=tag)
        if ist.state is IstState.PROCEEDING:
            self._invite_final(ist, 487, now, to_tag=tag)
            if call is not None and call.txn is ist:
                log.info("sip.cancelled", call_id=ist.call_id)
                self._end(call, "cancelled")
            elif call is not None and call.reinvite is ist:
                call.reinvite = None

    def _on_ack(self, req: SipRequest, ident: RequestIdentity, now: float) -> None:
        ist = self._ists.get(server_key(ident, "INVITE"))
        if ist is not None and ist.state is IstState.COMPLETED:
            ist.on(IstEvent.ACK)
            if ist.retransmit is not None:
                ist.retransmit.stop()
            ist.expires_at = now + self.config.timers.t4
            return
        call = self._calls.get(ident.call_id)
        if call is None or ident.to_tag != call.info.local_tag or ident.from_tag != call.info.from_tag:
            self.stats.stray += 1
            self.stats.dropped["stray"] += 1
            return
        for txn in (call.txn, call.reinvite):
            if txn is not None and txn.state is IstState.ACCEPTED and txn.cseq == ident.cseq:
                self._confirm(call, txn, now)
                return
        self.stats.stray += 1  # a retransmitted ACK or one for nothing we sent: absorbed
        self.stats.dropped["stray"] += 1

    def answer_reinvite(self, call_id: str, decision: Decision, now: float) -> bool:
        """Apply the application's decision on a re-INVITE; never raises (500 if it fails)."""
        return self._guarded(call_id, now, lambda: self._answer_reinvite(call_id, decision, now))

    def _tick(self, now: float) -> None:
        for ist in list(self._ists.values()):
            if ist.state is IstState.PROCEEDING and ist.app_deadline is not None and now >= ist.app_deadline:
                # The application never decided: the caller gets 500, not an endless 100.
                self.stats.app_timeouts += 1
                log.warning("sip.app_timeout", call_id=ist.call_id)
                self._fail_ist(ist, now, "app_timeout")
        self._tick_transactions(now)
        for call in list(self._calls.values()):
            if call.transfer is not None and now >= call.transfer.deadline:
                self._transfer_done(call, False, "timeout waiting for NOTIFY")
