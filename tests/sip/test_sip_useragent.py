"""The sans-IO user agent: transactions, dialogs, refusals and timers on a fake clock."""

from __future__ import annotations

from sipmsg import ANSWER, OFFER, PEER, Harness, request, statuses

from ivrbot.sip.address import parse_name_addr, parse_via
from ivrbot.sip.events import (
    Accept,
    CallEnded,
    CallEstablished,
    IncomingCall,
    IncomingReinvite,
    Reject,
    TransferOutcome,
)
from ivrbot.sip.message import SipRequest, SipResponse
from ivrbot.sip.transaction import SipTimers
from ivrbot.sip.useragent import UaConfig, UserAgent

RR = ["Record-Route: <sip:10.0.0.5:5060;lr;ftag=x>", "Record-Route: <sip:10.0.0.6;lr>"]


def invite(**kw: object) -> bytes:
    kw.setdefault("body", OFFER)
    return request("INVITE", **kw)  # type: ignore[arg-type]


def answered_call(h: Harness, extra: list[str] | None = None) -> str:
    """INVITE -> accept -> ACK; returns the bot's To tag."""
    h.feed(invite(extra=extra))
    assert h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    ok = h._collect()[-1]
    assert isinstance(ok, SipResponse) and ok.status == 200
    tag = parse_name_addr(ok.header("To") or "").tag
    assert tag
    h.feed(request("ACK", branch="z9hG4bKack", to_tag=tag))
    return tag


def test_invite_gets_100_at_once_then_app_decides() -> None:
    h = Harness()
    out = h.feed(invite())
    assert statuses(out) == [100]
    assert [type(e) for e in h.events] == [IncomingCall]
    ev = h.events[0]
    assert isinstance(ev, IncomingCall)
    assert ev.offer.media.remote_port == 40000 and ev.offer.media.dtmf_pt == 101
    assert ev.call.header("contact") == "<sip:alice@10.0.0.9:5070>"


def test_200_carries_sdp_contact_record_route_and_all_vias_in_order() -> None:
    h = Harness()
    vias = ["Via: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKp2", "Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKua"]
    h.feed(invite(extra=[*vias, *RR, "X-Tenant: acme"], via_host="10.0.0.5:5060;rport"))
    assert isinstance(h.events[0], IncomingCall) and h.events[0].call.header("X-Tenant") == "acme"
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    (ok,) = h._collect()
    assert isinstance(ok, SipResponse) and ok.status == 200
    got = ok.header_all("Via")
    assert [parse_via(v).branch for v in got] == ["z9hG4bKb1", "z9hG4bKp2", "z9hG4bKua"]
    top = parse_via(got[0])
    assert top.params["rport"] == "5060" and top.params["received"] == "10.0.0.5"
    assert ok.header_all("Record-Route") == ["<sip:10.0.0.5:5060;lr;ftag=x>", "<sip:10.0.0.6;lr>"]
    assert ok.header("Contact") == "<sip:ivrbot@192.0.2.10:5060>"
    assert ok.header("Content-Type") == "application/sdp" and ok.body == ANSWER.encode()
    assert parse_name_addr(ok.header("To") or "").tag


def test_200_retransmitted_doubling_to_t2_until_ack() -> None:
    h = Harness()
    h.feed(invite())
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    ok = h._collect()[0]
    tag = parse_name_addr(ok.header("To") or "").tag
    start = h.now
    times = []
    for _ in range(400):
        for m in h.advance(0.05):
            assert isinstance(m, SipResponse) and m.status == 200
            times.append(round(h.now - start, 2))
        if h.now - start > 12:
            break
    # T1=0.5 doubling: 0.5, 1.5, 3.5, 7.5, then every T2=4s: 11.5
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    h.feed(request("ACK", branch="z9hG4bKack", to_tag=tag))
    assert any(isinstance(e, CallEstablished) for e in h.events)
    assert h.advance(10) == []
    assert h.ua.stats.retransmits_sent == 5


def test_no_ack_gives_up_after_64t1_with_bye() -> None:
    h = Harness()
    h.feed(invite(extra=RR))
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    h._collect()
    out = h.advance(32.1, step=0.25)
    byes = [m for m in out if isinstance(m, SipRequest)]
    assert len(byes) == 1 and byes[0].method == "BYE"
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["ack_timeout"]
    assert h.ua.active_calls == 0
    # Loose routing: Request-URI = remote target (Contact), Route = route set in order.
    bye = byes[0]
    assert bye.uri == "sip:alice@10.0.0.9:5070"
    assert bye.header_all("Route") == ["<sip:10.0.0.5:5060;lr;ftag=x>", "<sip:10.0.0.6;lr>"]
    assert h.sent[-1][1] == ("10.0.0.5", 5060)


def test_retransmitted_invite_is_not_a_new_call() -> None:
    h = Harness()
    h.feed(invite())
    out = h.feed(invite())
    assert statuses(out) == [100]
    assert len([e for e in h.events if isinstance(e, IncomingCall)]) == 1
    assert h.ua.stats.retransmissions == 1
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    h._collect()
    assert statuses(h.feed(invite())) == [200]


def test_cancel_before_answer() -> None:
    h = Harness()
    h.feed(invite())
    out = h.feed(request("CANCEL", cseq=1))
    assert sorted(statuses(out)) == [200, 487]
    cancel_ok = next(m for m in out if isinstance(m, SipResponse) and m.status == 200)
    assert cancel_ok.header("CSeq") == "1 CANCEL"
    inv487 = next(m for m in out if isinstance(m, SipResponse) and m.status == 487)
    assert inv487.header("CSeq") == "1 INVITE"
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["cancelled"]
    # The app's late answer is ignored; the 487 is retransmitted until the ACK.
    assert not h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    assert h._collect() == []
    assert statuses(h.advance(0.6)) == [487]
    tag = parse_name_addr(inv487.header("To") or "").tag
    h.feed(request("ACK", cseq=1, to_tag=tag))  # same branch as the INVITE
    assert h.advance(10) == []


def test_cancel_for_unknown_transaction_is_481() -> None:
    h = Harness()
    assert statuses(h.feed(request("CANCEL", branch="z9hG4bKnone"))) == [481]


def test_bye_ends_call() -> None:
    h = Harness()
    tag = answered_call(h)
    out = h.feed(request("BYE", cseq=2, branch="z9hG4bKbye", to_tag=tag))
    assert statuses(out) == [200]
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["remote_bye"]
    # Retransmitted BYE gets the same 200 again, not 481.
    assert statuses(h.feed(request("BYE", cseq=2, branch="z9hG4bKbye", to_tag=tag))) == [200]
    assert h.ua.stats.retransmissions == 1


def test_unknown_dialog_is_481() -> None:
    h = Harness()
    assert statuses(h.feed(request("BYE", to_tag="nope"))) == [481]
    assert statuses(h.feed(request("BYE", branch="z9hG4bKx2"))) == [481]
    assert statuses(h.feed(request("INVITE", to_tag="nope", branch="z9hG4bKx3", body=OFFER))) == [481]


def test_options_and_draining() -> None:
    h = Harness()
    (ok,) = h.feed(request("OPTIONS"))
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert "INVITE" in (ok.header("Allow") or "") and ok.header("Accept") == "application/sdp"
    assert "Supported" in ok.headers
    h.ua.start_draining()
    (busy,) = h.feed(request("OPTIONS", branch="z9hG4bKo2"))
    assert isinstance(busy, SipResponse) and busy.status == 503 and busy.header("Retry-After")
    assert statuses(h.feed(invite(branch="z9hG4bKi2"))) == [503]
    assert h.events == []


def test_draining_keeps_live_calls() -> None:
    h = Harness()
    tag = answered_call(h)
    h.ua.start_draining()
    assert statuses(h.feed(request("BYE", cseq=2, branch="z9hG4bKbye", to_tag=tag))) == [200]


def test_no_sdp_and_no_common_codec_are_488() -> None:
    h = Harness()
    assert statuses(h.feed(invite(body=""))) == [100, 488]
    pcma = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8")
    assert statuses(h.feed(invite(body=pcma, branch="z9hG4bK2", call_id="c2"))) == [100, 488]
    assert h.events == []
    assert h.ua.stats.rejected[488] == 2


def test_app_rejects_busy_with_retry_after() -> None:
    h = Harness()
    h.feed(invite())
    h.ua.answer_invite("call-1", Reject(503, "Out Of Ports", retry_after=5), h.now)
    (resp,) = h._collect()
    assert isinstance(resp, SipResponse)
    assert (resp.status, resp.reason, resp.header("Retry-After")) == (503, "Out Of Ports", "5")
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["rejected"]


def test_untrusted_source_403_and_counted() -> None:
    h = Harness(ua=UserAgent(UaConfig("192.0.2.10", 5060, trusted_proxies=("10.0.0.0/24",))))
    assert statuses(h.feed(invite(), addr=("203.0.113.7", 5060))) == [403]
    assert h.feed(b"garbage", addr=("203.0.113.7", 5060)) == []
    assert h.ua.stats.untrusted == 2 and h.events == []
    assert statuses(h.feed(invite())) == [100]


def test_malformed_answered_400_when_possible_else_dropped() -> None:
    h = Harness()
    bad_len = request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: 40")
    (resp,) = h.feed(bad_len)
    assert isinstance(resp, SipResponse) and resp.status == 400 and "truncated" in (resp.header("Warning") or "")
    wrong_cseq = request("INVITE", cseq_method="BYE", body=OFFER, branch="z9hG4bKw")
    assert statuses(h.feed(wrong_cseq)) == [400]
    assert h.feed(b"\x00\x01garbage") == []
    assert h.feed(b"INVITE sip:x SIP/2.0\r\nVia: junk\r\n\r\n") == []
    assert h.ua.stats.malformed == 4
    assert h.ua.stats.internal_errors == 0
    assert statuses(h.feed(request("OPTIONS", branch="z9hG4bKfine"))) == [200]


def test_reinvite_hold_and_resume_applied_via_application() -> None:
    h = Harness()
    tag = answered_call(h)
    hold = OFFER.replace("a=sendrecv", "a=sendonly")
    out = h.feed(request("INVITE", cseq=2, branch="z9hG4bKre", to_tag=tag, body=hold))
    assert statuses(out) == [100]
    ev = h.events[-1]
    assert isinstance(ev, IncomingReinvite) and ev.offer.media.direction == "recvonly"
    assert h.ua.answer_reinvite("call-1", Accept(ANSWER), h.now)
    (ok,) = h._collect()
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.header("CSeq") == "2 INVITE"
    h.feed(request("ACK", cseq=2, branch="z9hG4bKack2", to_tag=tag))
    assert h.advance(5) == []
    moved = OFFER.replace("40000", "41000").replace("10.0.0.9", "10.0.0.99")
    h.feed(request("INVITE", cseq=3, branch="z9hG4bKre2", to_tag=tag, body=moved))
    ev2 = h.events[-1]
    assert isinstance(ev2, IncomingReinvite)
    assert (ev2.offer.media.remote_address, ev2.offer.media.remote_port) == ("10.0.0.99", 41000)
    # A re-INVITE without a common codec is refused, the call goes on.
    h.ua.answer_reinvite("call-1", Accept(ANSWER), h.now)
    h.feed(request("ACK", cseq=3, branch="z9hG4bKack3", to_tag=tag))
    pcma = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8")
    assert statuses(h.feed(request("INVITE", cseq=4, branch="z9hG4bKre3", to_tag=tag, body=pcma)))[-1] == 488
    assert h.ua.active_calls == 1


def test_old_cseq_in_dialog_is_500() -> None:
    h = Harness()
    tag = answered_call(h)
    h.feed(request("OPTIONS", cseq=5, branch="z9hG4bKo5", to_tag=tag))
    assert statuses(h.feed(request("BYE", cseq=3, branch="z9hG4bKb3", to_tag=tag))) == [500]


def test_local_hangup_sends_bye_with_increasing_cseq_and_retransmits() -> None:
    h = Harness()
    answered_call(h, extra=RR)
    assert h.ua.hangup("call-1", h.now)
    (bye,) = h._collect()
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    first = int((bye.header("CSeq") or "").split()[0])
    # Timer E: resent at 0.5, 1.5 ... until a response.
    again = h.advance(0.6)
    assert [m.method for m in again if isinstance(m, SipRequest)] == ["BYE"]
    resp = SipResponse(status=200, reason="OK")
    for v in bye.header_all("Via"):
        resp.headers.add("Via", v)
    for n in ("From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, bye.header(n) or "")
    h.feed(resp.to_bytes())
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["local_bye"]
    assert h.advance(5) == []
    assert first >= 1


def test_bye_timeout_timer_f_still_ends_call() -> None:
    h = Harness()
    answered_call(h)
    h.ua.hangup("call-1", h.now)
    h._collect()
    out = h.advance(33, step=0.25)
    assert 5 <= len(out) <= 12
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["local_bye"]


def test_hangup_before_ack_waits_for_ack() -> None:
    h = Harness()
    h.feed(invite())
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    ok = h._collect()[0]
    h.ua.hangup("call-1", h.now)
    assert h._collect() == []
    tag = parse_name_addr(ok.header("To") or "").tag
    out = h.feed(request("ACK", branch="z9hG4bKack", to_tag=tag))
    assert [m.method for m in out if isinstance(m, SipRequest)] == ["BYE"]


def _respond(h: Harness, req: SipRequest | SipResponse, code: int) -> None:
    resp = SipResponse(status=code, reason="X")
    for v in req.header_all("Via"):
        resp.headers.add("Via", v)
    for n in ("From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, req.header(n) or "")
    h.feed(resp.to_bytes())


def _notify(tag: str, cseq: int, frag: str, state: str = "active") -> bytes:
    return request(
        "NOTIFY", cseq=cseq, branch=f"z9hG4bKn{cseq}", to_tag=tag, body=frag, content_type="message/sipfrag",
        extra=["Event: refer", f"Subscription-State: {state}"],
    )


def test_blind_transfer_success_via_notify() -> None:
    h = Harness()
    tag = answered_call(h, extra=RR)
    assert h.ua.transfer("call-1", "sip:agent@10.0.0.50", h.now, timeout=10)
    (refer,) = h._collect()
    assert isinstance(refer, SipRequest) and refer.method == "REFER"
    assert refer.header("Refer-To") == "<sip:agent@10.0.0.50>"
    assert refer.header_all("Route") == ["<sip:10.0.0.5:5060;lr;ftag=x>", "<sip:10.0.0.6;lr>"]
    _respond(h, refer, 202)
    assert statuses(h.feed(_notify(tag, 2, "SIP/2.0 100 Trying\r\n"))) == [200]
    assert not any(isinstance(e, TransferOutcome) for e in h.events)
    assert statuses(h.feed(_notify(tag, 3, "SIP/2.0 200 OK\r\n", "terminated;reason=noresource"))) == [200]
    outcome = [e for e in h.events if isinstance(e, TransferOutcome)]
    assert len(outcome) == 1 and outcome[0].ok


def test_transfer_failure_and_timeout() -> None:
    h = Harness()
    tag = answered_call(h)
    h.ua.transfer("call-1", "<sip:agent@10.0.0.50>", h.now, timeout=10)
    (refer,) = h._collect()
    _respond(h, refer, 202)
    h.feed(_notify(tag, 2, "SIP/2.0 486 Busy Here\r\n"))
    assert [e.ok for e in h.events if isinstance(e, TransferOutcome)] == [False]
    h.ua.transfer("call-1", "sip:agent@10.0.0.50", h.now, timeout=10)
    (refer2,) = h._collect()
    assert int((refer2.header("CSeq") or "0").split()[0]) == int((refer.header("CSeq") or "0").split()[0]) + 1
    _respond(h, refer2, 202)
    h.advance(11)
    outcomes = [e for e in h.events if isinstance(e, TransferOutcome)]
    assert [e.ok for e in outcomes] == [False, False] and "timeout" in outcomes[-1].detail
    h.ua.transfer("call-1", "sip:agent@10.0.0.50", h.now, timeout=10)
    (refer3,) = h._collect()
    _respond(h, refer3, 603)
    assert [e.ok for e in h.events if isinstance(e, TransferOutcome)] == [False, False, False]


def test_strict_route_set() -> None:
    h = Harness()
    answered_call(h, extra=["Record-Route: <sip:10.0.0.5:5060>"])
    h.ua.hangup("call-1", h.now)
    (bye,) = h._collect()
    assert isinstance(bye, SipRequest)
    assert bye.uri == "sip:10.0.0.5:5060"
    assert bye.header_all("Route") == ["<sip:alice@10.0.0.9:5070>"]


def test_unsupported_method_405_unknown_method_501_require_420() -> None:
    h = Harness()
    assert statuses(h.feed(request("SUBSCRIBE"))) == [405]
    assert statuses(h.feed(request("FROBNICATE", branch="z9hG4bKu"))) == [501]
    assert statuses(h.feed(request("OPTIONS", branch="z9hG4bKr", extra=["Require: 100rel"]))) == [420]


def test_each_call_ends_exactly_once() -> None:
    h = Harness()
    tag = answered_call(h)
    h.ua.hangup("call-1", h.now)
    h._collect()
    h.feed(request("BYE", cseq=2, branch="z9hG4bKbye", to_tag=tag))
    h.advance(40, step=0.5)
    assert len([e for e in h.events if isinstance(e, CallEnded)]) == 1
    assert h.ua.next_deadline() is None


def test_timers_configurable() -> None:
    h = Harness(ua=UserAgent(UaConfig("192.0.2.10", 5060, timers=SipTimers(t1=0.1, t2=0.4))))
    h.feed(invite())
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    h._collect()
    h.advance(6.5, step=0.05)
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["ack_timeout"]


def test_responses_sent_to_source() -> None:
    h = Harness()
    h.feed(request("OPTIONS"), addr=("10.0.0.77", 5999))
    assert h.sent[-1][1] == ("10.0.0.77", 5999)
    assert PEER != ("10.0.0.77", 5999)


def test_rfc2543_peer_without_magic_cookie_retransmission() -> None:
    h = Harness()
    h.feed(invite(branch="oldstyle1"))
    assert statuses(h.feed(invite(branch="oldstyle1"))) == [100]
    assert len([e for e in h.events if isinstance(e, IncomingCall)]) == 1
    # CANCEL matches by Call-ID/CSeq/From/Via too.
    assert sorted(statuses(h.feed(request("CANCEL", branch="oldstyle1")))) == [200, 487]


def test_via_received_added_when_sent_by_differs() -> None:
    h = Harness()
    (resp,) = h.feed(request("OPTIONS", via_host="proxy.example.org:5060"), addr=("10.0.0.5", 5060))
    assert isinstance(resp, SipResponse)
    top = parse_via(resp.header_all("Via")[0])
    assert top.params["received"] == "10.0.0.5" and top.host == "proxy.example.org"
