"""The bot's SIP user agent, sans-IO: datagrams and clock ticks in, datagrams and events out.

``feed(data, addr, now)`` and ``tick(now)`` never raise; what they produce is collected with
``take_datagrams()`` and ``take_events()``. The application's decisions come back through
``answer_invite`` / ``answer_reinvite``; its own actions through ``hangup`` / ``transfer``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ivrbot.logs import get_logger
from ivrbot.sdp import NoCommonCodec, SdpError, SdpOffer, parse_offer
from ivrbot.sip.address import Via, ip_literal, parse_cseq, parse_name_addr, parse_uri, parse_via
from ivrbot.sip.dialog import Dialog, new_tag, parse_target
from ivrbot.sip.events import (
    Accept,
    Addr,
    CallEnded,
    CallEstablished,
    CallInfo,
    Decision,
    Event,
    IncomingCall,
    IncomingReinvite,
    Reject,
    TransferOutcome,
)
from ivrbot.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    ascii_number,
    is_keepalive,
    parse_message,
)
from ivrbot.sip.transaction import (
    ClientTxn,
    InviteServerTxn,
    NonInviteServerTxn,
    Retransmitter,
    SipTimers,
    TxnKey,
    server_key,
)

log = get_logger(__name__)


ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, INFO"
REASONS = {
    100: "Trying",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
}
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
#: Headers that may appear once (RFC 3261 7.3.1: only list headers may repeat).
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")
#: Methods of RFC 3261 and its common extensions: those the bot does not do get 405, others 501.
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)
_URI_SCHEMES = ("sip", "sips")
_SDP_ACCEPTED = ("application/sdp", "application/*", "*/*")
_NO_DIALOG_METHODS = {"BYE", "NOTIFY", "INFO", "UPDATE", "PRACK"}


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

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "malformed": self.malformed,
            "untrusted": self.untrusted,
            "retransmissions": self.retransmissions,
            "retransmits_sent": self.retransmits_sent,
            "stray": self.stray,
            "internal_errors": self.internal_errors,
            "app_timeouts": self.app_timeouts,
            "calls": self.calls,
            "responses": dict(self.responses),
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
        }


DROP_REASONS = ("malformed", "untrusted", "stray")


@dataclass
class UaConfig:
    advertised_address: str
    advertised_port: int
    trusted_proxies: tuple[str, ...] = ()
    user_agent: str = "ivrbot"
    timers: SipTimers = field(default_factory=SipTimers)
    drain_retry_after: int = 30


@dataclass
class _Transfer:
    deadline: float
    target: str
    last_status: int | None = None


@dataclass
class _Call:
    info: CallInfo
    invite: SipRequest
    source: Addr
    txn: InviteServerTxn
    state: str = "pending"  # pending -> answering -> confirmed -> ending
    dialog: Dialog | None = None
    reinvite: InviteServerTxn | None = None
    hangup_requested: bool = False
    transfer: _Transfer | None = None


def _reason(code: int) -> str:
    return REASONS.get(code, "Unknown")


class UserAgent:
    """UAS core for the bot. One instance per listening socket."""

    def __init__(self, config: UaConfig) -> None:
        self.config = config
        self.stats = SipStats()
        self.draining = False
        self._networks = [ipaddress.ip_network(c.strip(), strict=False) for c in config.trusted_proxies if c.strip()]
        self._calls: dict[str, _Call] = {}
        self._ists: dict[TxnKey, InviteServerTxn] = {}
        self._nists: dict[TxnKey, NonInviteServerTxn] = {}
        self._clients: dict[str, ClientTxn] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[Event] = []
        self._logged_untrusted: set[str] = set()
        #: the request being handled, so that a bug still gets it a final answer
        self._inflight: tuple[SipRequest, Via, Addr] | None = None

    # ---- outputs -------------------------------------------------------------------------
    def take_datagrams(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def call_ids(self) -> list[str]:
        return list(self._calls)

    @property
    def contact(self) -> str:
        return f"<sip:{self.config.user_agent}@{self._host()}:{self.config.advertised_port}>"

    def _host(self) -> str:
        a = self.config.advertised_address
        return f"[{a}]" if ":" in a and not a.startswith("[") else a

    def start_draining(self) -> None:
        self.draining = True

    # ---- input ---------------------------------------------------------------------------
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

    @property
    def open_transactions(self) -> int:
        """Server transactions not yet freed (each is freed by its own timer)."""
        return len(self._ists) + len(self._nists)

    def _recover(self, now: float) -> None:
        """After a bug: the request being handled and every INVITE transaction nobody will answer
        (not waiting for the application) get a final 500, so each one still ends and expires."""
        try:
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                req, via, addr = inflight
                key = server_key(req, via)
                if req.method == "INVITE" and key not in self._ists:
                    self._new_ist(req, via, addr, initial=False)
                elif req.method not in ("INVITE", "ACK") and key not in self._nists:
                    self._reply_non_invite(req, via, addr, now, 500, to_tag=new_tag())
            for ist in list(self._ists.values()):
                if ist.state == "proceeding" and ist.app_deadline is None:
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
        times: list[float] = []
        for ist in self._ists.values():
            if ist.retransmit is not None and ist.retransmit.active:
                times.append(min(ist.retransmit.next_at, ist.retransmit.deadline))
            if ist.expires_at is not None:
                times.append(ist.expires_at)
            if ist.app_deadline is not None and ist.state == "proceeding":
                times.append(ist.app_deadline)
        times.extend(n.expires_at for n in self._nists.values())
        for c in self._clients.values():
            times.append(min(c.retransmit.next_at, c.retransmit.deadline))
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
            via = self._validate(msg)
        except SipParseError as exc:
            self._malformed(exc.reason, exc.status, msg, addr)
            return
        self._on_request(msg, via, addr, now)

    def _untrusted(self, addr: Addr, msg: SipRequest | SipResponse | None) -> None:
        self.stats.untrusted += 1
        if addr[0] not in self._logged_untrusted and len(self._logged_untrusted) < 1024:
            self._logged_untrusted.add(addr[0])
            log.warning("sip.untrusted_source", source=addr[0])
        if isinstance(msg, SipRequest) and msg.method != "ACK" and self._answerable(msg):
            self._send_response(msg, addr, 403, to_tag=new_tag())
        else:
            self.stats.dropped["untrusted"] += 1

    def _validate(self, req: SipRequest) -> Via:
        for name in _REQUIRED:
            if req.header(name) is None:
                raise SipParseError(f"missing {name}")
        for name in _SINGLE:
            if len(req.header_all(name)) > 1:
                raise SipParseError(f"more than one {name}")
        vias = req.header_all("Via")
        via = parse_via(vias[0])
        for other in vias[1:]:  # stray separators make empty or broken entries (RFC 4475 3.1.2.1)
            parse_via(other)
        parse_name_addr(req.header("From") or "")
        parse_name_addr(req.header("To") or "")
        if not (req.header("Call-ID") or "").strip():
            raise SipParseError("empty Call-ID")
        _, method = parse_cseq(req.header("CSeq") or "")
        if method != req.method:
            raise SipParseError(f"CSeq method {method!r} does not match {req.method!r}")
        mf = req.header("Max-Forwards")
        if mf is not None and ascii_number(mf) is None:
            raise SipParseError(f"bad Max-Forwards {mf[:10]!r}")
        parse_uri(req.uri)
        if req.method == "INVITE":  # what the dialog is built from must parse now, not at the answer
            for rr in req.header_all("Record-Route"):
                parse_name_addr(rr)
        return via

    def _answerable(self, msg: SipRequest) -> bool:
        """A response can be addressed: the top Via parses (the client matches on its branch).

        Whatever else is missing or broken is copied as it is, or left out, in the 400.
        """
        vias = msg.header_all("Via")
        if not vias:
            return False
        try:
            parse_via(vias[0], any_version=True)
        except SipParseError:
            return False
        return True

    def _malformed(self, reason: str, status: int, partial: object, addr: Addr) -> None:
        self.stats.malformed += 1
        answered = (
            isinstance(partial, SipRequest) and partial.method != "ACK" and self._answerable(partial)
        )
        log.warning("sip.malformed", source=f"{addr[0]}:{addr[1]}", reason=reason, answered=answered)
        if answered:
            assert isinstance(partial, SipRequest)
            self._send_response(
                partial, addr, status, to_tag=new_tag(), extra=[("Warning", self._warning(399, reason))]
            )
        else:
            self.stats.dropped["malformed"] += 1

    def _warning(self, code: int, text: str) -> str:
        """A Warning value; the text (which may quote the peer's bytes) made a safe quoted-string."""
        safe = "".join(c if c.isprintable() and c not in '"\\' else "'" for c in text[:100])
        return f'{code} {self._host()} "{safe}"'

    # ---- responses we send ---------------------------------------------------------------
    def _build_response(
        self,
        req: SipRequest,
        addr: Addr,
        code: int,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipResponse:
        resp = SipResponse(status=code, reason=reason or _reason(code))
        h = resp.headers
        for i, via_text in enumerate(req.header_all("Via")):
            if i == 0:
                via_text = self._stamp_via(via_text, addr)
            h.add("Via", via_text)
        if code in (200,) and req.method == "INVITE":
            for rr in req.header_all("Record-Route"):
                h.add("Record-Route", rr)
        # A 400 may answer a request that lacks some of these: what is there is copied as it is.
        from_ = req.header("From")
        if from_ is not None:
            h.add("From", from_)
        to = req.header("To")
        if to is not None:
            if code > 100 and to_tag is not None:
                try:
                    if parse_name_addr(to).tag is None:
                        to = f"{to};tag={to_tag}"
                except SipParseError:
                    pass
            h.add("To", to)
        for name in ("Call-ID", "CSeq"):
            value = req.header(name)
            if value is not None:
                h.add(name, value)
        h.add("Server", self.config.user_agent)
        for name, value in extra:
            h.add(name, value)
        if content_type:
            h.add("Content-Type", content_type)
        resp.body = body
        return resp

    def _stamp_via(self, via_text: str, addr: Addr) -> str:
        """RFC 3261 18.2.1 received= and RFC 3581 rport= on the top Via."""
        try:
            via = parse_via(via_text)
        except SipParseError:
            return via_text
        params = dict(via.params)
        if "rport" in params:
            params["rport"] = str(addr[1])
            params["received"] = addr[0]
        elif ip_literal(via.host) != addr[0]:
            params["received"] = addr[0]
        return str(Via(via.transport, via.host, via.port, params))

    def _send_response(
        self,
        req: SipRequest,
        addr: Addr,
        code: int,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> bytes:
        resp = self._build_response(
            req, addr, code, reason=reason, to_tag=to_tag, extra=extra, body=body, content_type=content_type
        )
        data = resp.to_bytes()
        # Responses go back where the request came from (symmetric, as rport asks and OpenSIPS expects).
        self._out.append((data, addr))
        self.stats.responses[code] += 1
        return data

    def _reply_non_invite(
        self, req: SipRequest, via: Via, addr: Addr, now: float, code: int, **kw: object
    ) -> None:
        data = self._send_response(req, addr, code, **kw)  # type: ignore[arg-type]
        key = server_key(req, via)
        self._nists[key] = NonInviteServerTxn(key, addr, data, now + self.config.timers.timeout)

    # ---- requests ------------------------------------------------------------------------
    def _on_request(self, req: SipRequest, via: Via, addr: Addr, now: float) -> None:
        if req.method == "ACK":
            self._on_ack(req, via, now)
            return
        key = server_key(req, via)
        nist = self._nists.get(key)
        if nist is not None:
            self.stats.retransmissions += 1
            self._out.append((nist.last_response, addr))
            return
        ist = self._ists.get(key)
        if ist is not None:
            self.stats.retransmissions += 1
            if ist.last_response is not None and ist.state != "confirmed":
                self._out.append((ist.last_response, addr))
            return
        self._inflight = (req, via, addr)
        # Max-Forwards 0 is not checked: it only limits proxies; a UAS processes the request
        # (RFC 4475 3.3.11).
        if req.method not in KNOWN_METHODS:
            self._reply_non_invite(req, via, addr, now, 501, to_tag=new_tag(), extra=[("Allow", ALLOW)])
            return
        if parse_uri(req.uri).scheme not in _URI_SCHEMES:
            self._reply_final(req, via, addr, now, 416)
            return
        if req.method not in ("CANCEL",):
            require = [t.strip() for v in req.header_all("Require") for t in v.split(",") if t.strip()]
            if require:
                self._reply_final(req, via, addr, now, 420, extra=[("Unsupported", ", ".join(require))])
                return
        if req.method == "CANCEL":
            self._on_cancel(req, via, addr, now)
            return
        to_tag = parse_name_addr(req.header("To") or "").tag
        if to_tag:
            self._on_in_dialog(req, via, addr, now, to_tag)
            return
        if req.method == "INVITE":
            self._on_invite(req, via, addr, now)
        elif req.method == "OPTIONS":
            self._on_options(req, via, addr, now)
        elif req.method in _NO_DIALOG_METHODS:
            self._reply_non_invite(req, via, addr, now, 481, to_tag=new_tag())
        else:
            self._reply_non_invite(req, via, addr, now, 405, to_tag=new_tag(), extra=[("Allow", ALLOW)])

    def _on_options(self, req: SipRequest, via: Via, addr: Addr, now: float) -> None:
        if self.draining:
            self._reply_non_invite(
                req, via, addr, now, 503, to_tag=new_tag(),
                extra=[("Retry-After", str(self.config.drain_retry_after))],
            )
            return
        self._reply_non_invite(
            req, via, addr, now, 200, to_tag=new_tag(),
            extra=[("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "")],
        )

    def _reply_final(
        self, req: SipRequest, via: Via, addr: Addr, now: float, code: int, extra: list[tuple[str, str]] | None = None
    ) -> None:
        """A final refusal before any processing, in the transaction kind the method needs."""
        if req.method == "INVITE":
            ist = self._new_ist(req, via, addr, initial=False)
            self._invite_final(ist, code, now, to_tag=new_tag(), extra=extra or [])
        else:
            self._reply_non_invite(req, via, addr, now, code, to_tag=new_tag(), extra=extra or [])

    def _invite_final(self, ist: InviteServerTxn, code: int, now: float, **kw: object) -> None:
        """Send a non-2xx final: retransmitted (Timer G) until ACK, forgotten after Timer H."""
        data = self._send_response(ist.request, ist.addr, code, **kw)  # type: ignore[arg-type]
        t = self.config.timers
        ist.state = "completed"
        ist.last_response = data
        ist.app_deadline = None
        ist.retransmit = Retransmitter(data, ist.addr, now + t.t1, t.t1, t.t2, now + t.timeout)
        ist.expires_at = now + t.timeout

    def _new_ist(self, req: SipRequest, via: Via, addr: Addr, initial: bool) -> InviteServerTxn:
        cseq, _ = parse_cseq(req.header("CSeq") or "")
        key = server_key(req, via)
        ist = InviteServerTxn(key, req, addr, req.header("Call-ID") or "", cseq, initial=initial)
        self._ists[key] = ist
        return ist

    def _check_offer(self, ist: InviteServerTxn, to_tag: str, now: float) -> SdpOffer | None:
        req = ist.request
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        accept = [a.split(";")[0].strip().lower() for a in req.header_all("Accept")]
        if any(accept) and not any(a in _SDP_ACCEPTED for a in accept):
            # An SDP answer would break the offerer's own Accept (RFC 4475 3.3.15).
            self._invite_final(ist, 406, now, to_tag=to_tag, extra=[("Accept", "application/sdp")])
            return None
        if not req.body.strip():
            self._invite_final(ist, 488, now, to_tag=to_tag, extra=[("Warning", self._warning(399, "no SDP offer"))])
            return None
        if ctype and ctype != "application/sdp":
            self._invite_final(ist, 415, now, to_tag=to_tag, extra=[("Accept", "application/sdp")])
            return None
        try:
            return parse_offer(req.body)
        except NoCommonCodec as exc:
            warning = self._warning(305, str(exc))
        except SdpError as exc:
            warning = self._warning(399, f"bad SDP: {exc}")
        self._invite_final(ist, 488, now, to_tag=to_tag, extra=[("Warning", warning)])
        return None

    def _on_invite(self, req: SipRequest, via: Via, addr: Addr, now: float) -> None:
        call_id = req.header("Call-ID") or ""
        ist = self._new_ist(req, via, addr, initial=True)
        tag = new_tag()
        if call_id in self._calls:
            self._invite_final(ist, 482, now, to_tag=tag)
            self.stats.rejected[482] += 1
            return
        if self.draining:
            self._invite_final(
                ist, 503, now, to_tag=tag, extra=[("Retry-After", str(self.config.drain_retry_after))]
            )
            self.stats.rejected[503] += 1
            return
        ist.last_response = self._send_response(req, addr, 100)
        offer = self._check_offer(ist, tag, now)
        if offer is None:
            self.stats.rejected[self._last_code(ist)] += 1
            log.info("sip.invite_refused", call_id=call_id, code=self._last_code(ist))
            return
        from_ = parse_name_addr(req.header("From") or "")
        to = parse_name_addr(req.header("To") or "")
        info = CallInfo(
            call_id=call_id,
            from_uri=str(from_.uri),
            from_tag=from_.tag or "",
            to_uri=str(to.uri),
            local_tag=tag,
            request_uri=req.uri,
            remote_addr=addr,
            headers=tuple(req.headers),
        )
        self._calls[call_id] = _Call(info, req, addr, ist)
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
                    if ist is not None and ist.state == "proceeding":
                        self._fail_ist(ist, now, "error")
            except Exception:
                self.stats.internal_errors += 1
                log.exception("sip.internal_error_in_recovery", call_id=call_id)
            self._recover(now)
            return False

    def _answer_invite(self, call_id: str, decision: Decision, now: float) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.state != "pending":
            return False
        ist = call.txn
        if isinstance(decision, Reject):
            code, reason, extra = _refusal(decision)
            self._invite_final(ist, code, now, reason=reason, to_tag=call.info.local_tag, extra=extra)
            self.stats.rejected[code] += 1
            self._end(call, "rejected")
            return True
        call.dialog = Dialog.from_invite(call.invite, call.info.local_tag)
        call.dialog.remote_cseq = ist.cseq
        self._accept(ist, call, decision, now)
        call.state = "answering"
        return True

    def _accept(self, ist: InviteServerTxn, call: _Call, decision: Accept, now: float) -> None:
        data = self._send_response(
            ist.request, ist.addr, 200, to_tag=call.info.local_tag,
            extra=[("Contact", self.contact), ("Allow", ALLOW), ("Supported", "")],
            body=decision.answer_sdp.encode(), content_type="application/sdp",
        )
        t = self.config.timers
        ist.state = "accepted"
        ist.last_response = data
        # RFC 3261 13.3.1.4: the 2xx is resent T1, 2T1, ... T2 until the ACK, for 64*T1.
        ist.retransmit = Retransmitter(data, ist.addr, now + t.t1, t.t1, t.t2, now + t.timeout)
        ist.expires_at = None

    def _on_cancel(self, req: SipRequest, via: Via, addr: Addr, now: float) -> None:
        ist = self._ists.get(server_key(req, via, "INVITE"))
        if ist is None:
            self._reply_non_invite(req, via, addr, now, 481, to_tag=new_tag())
            return
        call = self._calls.get(ist.call_id)
        tag = call.info.local_tag if call is not None and call.txn is ist else new_tag()
        self._reply_non_invite(req, via, addr, now, 200, to_tag=tag)
        if ist.state == "proceeding":
            self._invite_final(ist, 487, now, to_tag=tag)
            if call is not None and call.txn is ist:
                log.info("sip.cancelled", call_id=ist.call_id)
                self._end(call, "cancelled")
            elif call is not None and call.reinvite is ist:
                call.reinvite = None

    def _on_ack(self, req: SipRequest, via: Via, now: float) -> None:
        ist = self._ists.get(server_key(req, via, "INVITE"))
        if ist is not None and ist.state == "completed":
            ist.state = "confirmed"
            if ist.retransmit is not None:
                ist.retransmit.stop()
            ist.expires_at = now + self.config.timers.t4
            return
        call_id = req.header("Call-ID") or ""
        call = self._calls.get(call_id)
        cseq, _ = parse_cseq(req.header("CSeq") or "")
        to_tag = parse_name_addr(req.header("To") or "").tag
        from_tag = parse_name_addr(req.header("From") or "").tag or ""
        if call is None or to_tag != call.info.local_tag or from_tag != call.info.from_tag:
            self.stats.stray += 1
            self.stats.dropped["stray"] += 1
            return
        for txn in (call.txn, call.reinvite):
            if txn is not None and txn.state == "accepted" and txn.cseq == cseq:
                self._confirm(call, txn, now)
                return
        self.stats.stray += 1  # a retransmitted ACK or one for nothing we sent: absorbed
        self.stats.dropped["stray"] += 1

    def _confirm(self, call: _Call, txn: InviteServerTxn, now: float) -> None:
        txn.state = "confirmed"
        if txn.retransmit is not None:
            txn.retransmit.stop()
        # Keep the key a while so late INVITE retransmissions are absorbed, not taken as new.
        txn.expires_at = now + self.config.timers.timeout
        if txn is call.reinvite:
            call.reinvite = None
            return
        call.state = "confirmed"
        log.info("sip.established", call_id=call.info.call_id)
        self._events.append(CallEstablished(call.info))
        if call.hangup_requested:
            self._send_bye(call, now, "local_bye")

    def _on_in_dialog(self, req: SipRequest, via: Via, addr: Addr, now: float, to_tag: str) -> None:
        call = self._calls.get(req.header("Call-ID") or "")
        from_tag = parse_name_addr(req.header("From") or "").tag
        if (
            call is None
            or call.dialog is None
            or to_tag != call.info.local_tag
            or (from_tag or "") != call.dialog.remote_tag
        ):
            if req.method == "INVITE":
                ist = self._new_ist(req, via, addr, initial=False)
                self._invite_final(ist, 481, now)
            else:
                self._reply_non_invite(req, via, addr, now, 481)
            return
        dialog = call.dialog
        cseq, _ = parse_cseq(req.header("CSeq") or "")
        if cseq < dialog.remote_cseq or (cseq == dialog.remote_cseq and req.method != "INVITE"):
            if req.method == "INVITE":
                ist = self._new_ist(req, via, addr, initial=False)
                self._invite_final(ist, 500, now)
            else:
                self._reply_non_invite(req, via, addr, now, 500, reason="CSeq Out Of Order")
            return
        dialog.remote_cseq = cseq
        if req.method == "BYE":
            self._reply_non_invite(req, via, addr, now, 200)
            log.info("sip.remote_bye", call_id=call.info.call_id)
            self._end(call, "remote_bye")
        elif req.method == "INVITE":
            self._on_reinvite(call, req, via, addr, now)
        elif req.method in ("OPTIONS", "INFO"):
            extra = [("Allow", ALLOW), ("Accept", "application/sdp")] if req.method == "OPTIONS" else []
            self._reply_non_invite(req, via, addr, now, 200, extra=extra)
        elif req.method == "NOTIFY":
            self._on_notify(call, req, via, addr, now)
        else:
            self._reply_non_invite(req, via, addr, now, 405, extra=[("Allow", ALLOW)])

    def _on_reinvite(self, call: _Call, req: SipRequest, via: Via, addr: Addr, now: float) -> None:
        ist = self._new_ist(req, via, addr, initial=False)
        tag = call.info.local_tag
        busy = call.reinvite is not None or call.txn.state == "accepted"
        if busy:
            self._invite_final(ist, 500, now, to_tag=tag, extra=[("Retry-After", "1")])
            return
        if call.state == "ending":
            self._invite_final(ist, 481, now, to_tag=tag)
            return
        ist.last_response = self._send_response(req, addr, 100)
        offer = self._check_offer(ist, tag, now)
        if offer is None:
            return
        call.reinvite = ist
        ist.app_deadline = now + self.config.timers.timeout
        self._events.append(IncomingReinvite(call.info, offer))

    def answer_reinvite(self, call_id: str, decision: Decision, now: float) -> bool:
        """Apply the application's decision on a re-INVITE; never raises (500 if it fails)."""
        return self._guarded(call_id, now, lambda: self._answer_reinvite(call_id, decision, now))

    def _answer_reinvite(self, call_id: str, decision: Decision, now: float) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.reinvite is None or call.reinvite.state != "proceeding" or call.dialog is None:
            return False
        ist = call.reinvite
        if isinstance(decision, Reject):
            code, reason, extra = _refusal(decision)
            self._invite_final(ist, code, now, reason=reason, to_tag=call.info.local_tag, extra=extra)
            call.reinvite = None
            return True
        call.dialog.refresh_target(ist.request)
        self._accept(ist, call, decision, now)
        return True

    def _on_notify(self, call: _Call, req: SipRequest, via: Via, addr: Addr, now: float) -> None:
        event = (req.header("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self._reply_non_invite(req, via, addr, now, 489)
            return
        self._reply_non_invite(req, via, addr, now, 200)
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

    def _transfer_done(self, call: _Call, ok: bool, detail: str) -> None:
        if call.transfer is None:
            return
        call.transfer = None
        log.info("sip.transfer_outcome", call_id=call.info.call_id, ok=ok, detail=detail)
        self._events.append(TransferOutcome(call.info, ok, detail))

    # ---- what the application asks -------------------------------------------------------
    def hangup(self, call_id: str, now: float) -> bool:
        """End a call: BYE if answered (after the ACK), 480 if still ringing. False if unknown."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        if call.state == "pending":
            self._invite_final(call.txn, 480, now, to_tag=call.info.local_tag)
            self._end(call, "local_hangup")
        elif call.state == "answering":
            call.hangup_requested = True
        elif call.state == "confirmed":
            self._send_bye(call, now, "local_bye")
        return True

    def transfer(self, call_id: str, target: str, now: float, timeout: float) -> bool:
        """Blind REFER to ``target``; the outcome arrives as a TransferOutcome event."""
        call = self._calls.get(call_id)
        if call is None or call.state != "confirmed" or call.dialog is None or call.transfer is not None:
            return False
        uri = parse_target(target)
        req = call.dialog.build_request(
            "REFER",
            via_host=self._host(),
            via_port=self.config.advertised_port,
            contact=self.contact,
            user_agent=self.config.user_agent,
            extra=[("Refer-To", f"<{uri}>"), ("Referred-By", self.contact)],
        )
        call.transfer = _Transfer(now + timeout, str(uri))
        self._send_client(call, req, "refer", now)
        log.info("sip.refer", call_id=call_id, target=str(uri))
        return True

    def _send_bye(self, call: _Call, now: float, reason: str) -> None:
        assert call.dialog is not None
        call.state = "ending"
        req = call.dialog.build_request(
            "BYE",
            via_host=self._host(),
            via_port=self.config.advertised_port,
            contact=self.contact,
            user_agent=self.config.user_agent,
        )
        self._send_client(call, req, "bye", now, end_reason=reason)
        log.info("sip.bye_sent", call_id=call.info.call_id, reason=reason)

    def _send_client(self, call: _Call, req: SipRequest, purpose: str, now: float, **extra: object) -> None:
        assert call.dialog is not None
        dest = call.dialog.destination(call.source)
        data = req.to_bytes()
        t = self.config.timers
        branch = parse_via(req.header_all("Via")[0]).branch or ""
        self._clients[branch] = ClientTxn(
            branch, req.method, call.info.call_id,
            Retransmitter(data, dest, now + t.t1, t.t1, t.t2, now + t.timeout), purpose, extra=dict(extra),
        )
        self._out.append((data, dest))

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
            txn.state = "proceeding"
            txn.retransmit.interval = self.config.timers.t2 / 2  # next doubling lands on T2
            return
        del self._clients[txn.branch]
        self._client_done(txn, resp.status)

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

    def _end(self, call: _Call, reason: str) -> None:
        if self._calls.get(call.info.call_id) is not call:
            return
        del self._calls[call.info.call_id]
        if call.transfer is not None:
            self._transfer_done(call, False, f"call ended: {reason}")
        for txn in (call.txn, call.reinvite):
            if txn is not None and txn.state == "accepted" and txn.retransmit is not None:
                # No more 2xx retransmissions; the key is kept briefly to absorb late copies.
                txn.retransmit.stop()
                txn.state = "confirmed"
                txn.expires_at = txn.retransmit.deadline
        log.info("sip.call_ended", call_id=call.info.call_id, reason=reason)
        self._events.append(CallEnded(call.info, reason))

    # ---- timers --------------------------------------------------------------------------
    def _tick(self, now: float) -> None:
        for ist in list(self._ists.values()):
            if ist.state == "proceeding" and ist.app_deadline is not None and now >= ist.app_deadline:
                # The application never decided: the caller gets 500, not an endless 100.
                self.stats.app_timeouts += 1
                log.warning("sip.app_timeout", call_id=ist.call_id)
                self._fail_ist(ist, now, "app_timeout")
        for key, ist in list(self._ists.items()):
            r = ist.retransmit
            if ist.state == "accepted" and r is not None and r.expired(now):
                r.stop()
                self._ack_timeout(ist, now)
            elif r is not None and r.active and r.due(now):
                if ist.state == "completed" and r.expired(now):
                    r.stop()
                else:
                    self._out.append((r.payload, r.addr))
                    self.stats.retransmits_sent += 1
                    r.fire(now)
            if ist.expires_at is not None and now >= ist.expires_at:
                del self._ists[key]
        for nkey, nist in list(self._nists.items()):
            if now >= nist.expires_at:
                del self._nists[nkey]
        for branch, txn in list(self._clients.items()):
            r = txn.retransmit
            if r.expired(now):
                del self._clients[branch]
                self._client_done(txn, None)
            elif r.due(now):
                self._out.append((r.payload, r.addr))
                self.stats.retransmits_sent += 1
                if txn.state == "proceeding":
                    r.interval = self.config.timers.t2 / 2
                r.fire(now)
        for call in list(self._calls.values()):
            if call.transfer is not None and now >= call.transfer.deadline:
                self._transfer_done(call, False, "timeout waiting for NOTIFY")

    def _ack_timeout(self, ist: InviteServerTxn, now: float) -> None:
        ist.state = "confirmed"
        ist.expires_at = now
        call = self._calls.get(ist.call_id)
        if call is None:
            return
        if ist is call.reinvite:
            call.reinvite = None
        log.warning("sip.ack_timeout", call_id=ist.call_id)
        # RFC 3261 13.3.1.4: no ACK within 64*T1 -> the dialog is ended with a BYE.
        self._send_bye(call, now, "ack_timeout")
        self._end(call, "ack_timeout")


def _refusal(decision: Reject) -> tuple[int, str | None, list[tuple[str, str]]]:
    """The final response for an application's Reject: a code outside 300..699 becomes 500."""
    code = decision.code if 300 <= decision.code <= 699 else 500
    reason = decision.reason if decision.reason and code == decision.code else None
    if reason is not None and not all(c.isprintable() for c in reason):
        reason = None
    extra = [("Retry-After", str(decision.retry_after))] if decision.retry_after is not None else []
    return code, reason, extra


def _sipfrag_status(body: bytes) -> int | None:
    """Status code of a message/sipfrag body ("SIP/2.0 200 OK")."""
    first = body.decode("utf-8", errors="replace").lstrip().split("\n", 1)[0].strip()
    parts = first.split()
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0" and len(parts[1]) == 3:
        return ascii_number(parts[1])
    return None

