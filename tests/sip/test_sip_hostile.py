"""Hostile and broken input (issue "hostile input", SIP part): each class gets its answer, nothing
escapes the parser, and every server transaction ends with a final response and is freed."""

from __future__ import annotations

from unittest import mock

import pytest
from sipmsg import ANSWER, OFFER, PEER, Harness, request, statuses

from ivrbot.sdp import SdpError, parse_offer
from ivrbot.sip.address import parse_cseq, parse_name_addr, parse_uri, parse_via
from ivrbot.sip.events import Accept, CallEnded, CallEstablished, IncomingCall, Reject
from ivrbot.sip.message import SipParseError, SipResponse, parse_message

UNICODE_DIGITS = ["²", "٥", "５", "߇", "𝟕"]  # superscript, Arabic-Indic, fullwidth, NKo, math bold


def invite(body: str = OFFER, **kw: object) -> bytes:
    return request("INVITE", body=body, **kw)  # type: ignore[arg-type]


def _final(msgs: list[SipResponse]) -> int | None:
    finals = [m.status for m in msgs if isinstance(m, SipResponse) and m.status >= 200]
    return finals[-1] if finals else None


def _expire(h: Harness) -> None:
    h.advance(40, step=1.0)
    assert h.ua.open_transactions == 0
    assert h.ua.next_deadline() is None


# ---- 1. parser contract: ASCII numbers only, no overflow -----------------------------------------
@pytest.mark.parametrize("digit", UNICODE_DIGITS)
def test_unicode_digits_are_not_numbers(digit: str) -> None:
    raw = f"OPTIONS sip:b@h SIP/2.0\r\nCall-ID: x\r\nContent-Length: {digit}\r\n\r\nabcde".encode()
    with pytest.raises(SipParseError):
        parse_message(raw)  # not read as 5 (int('٥') == 5)
    for bad in (f"{digit} INVITE", f"1{digit} INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)
    with pytest.raises(SipParseError):
        parse_via(f"SIP/2.0/UDP 10.0.0.1:50{digit}0;branch=z9hG4bK1")
    with pytest.raises(SipParseError):
        parse_uri(f"sip:a@10.0.0.1:{digit}")


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
def test_unicode_digits_in_requests_get_400(digit: str) -> None:
    h = Harness()
    for i, (old, new) in enumerate(
        [(b"CSeq: 1", f"CSeq: {digit}".encode()), (b"Max-Forwards: 70", f"Max-Forwards: {digit}".encode()),
         (b"10.0.0.5:5060", f"10.0.0.5:5{digit}".encode())]
    ):
        raw = request("OPTIONS", branch=f"z9hG4bKu{i}").replace(old, new, 1)
        out = h.feed(raw)
        if old == b"10.0.0.5:5060":  # the top Via itself is broken: nothing to address a 400 to
            assert out == []
        else:
            assert statuses(out) == [400]
    assert h.ua.stats.internal_errors == 0


def test_oversized_numbers() -> None:
    huge = "9" * 5000  # int() of more than 4300 digits raises ValueError
    for raw in (
        f"OPTIONS sip:b@h SIP/2.0\r\nContent-Length: {huge}\r\n\r\n".encode(),
        f"SIP/2.0 {huge} OK\r\n\r\n".encode(),
    ):
        with pytest.raises(SipParseError):
            parse_message(raw)
    with pytest.raises(SipParseError):
        parse_cseq(f"{huge} INVITE")
    with pytest.raises(SipParseError):
        parse_via(f"SIP/2.0/UDP h:{huge}")
    h = Harness()
    assert statuses(h.feed(request("OPTIONS", cseq=2**31))) == [400]
    mf = request("OPTIONS", branch="z9hG4bKmf").replace(b"Forwards: 70", f"Forwards: {huge}".encode())
    assert statuses(h.feed(mf)) == [400]
    assert h.ua.stats.internal_errors == 0


def test_status_code_is_exactly_three_digits() -> None:
    for line in (b"SIP/2.0 2000 OK", b"SIP/2.0 20 OK", b"SIP/2.0 4294967301 x"):
        with pytest.raises(SipParseError):
            parse_message(line + b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n")
    assert isinstance(parse_message(b"SIP/2.0 100 \r\n\r\n"), SipResponse)
    h = Harness()
    assert h.feed(b"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n\r\n") == []
    assert h.ua.stats.dropped["malformed"] == 1


@pytest.mark.parametrize(
    "media",
    [
        "m=audio ² RTP/AVP 0\r\n",
        "m=audio 40000 RTP/AVP ²\r\n",
        "m=audio 40000 RTP/AVP 0 ٥\r\n",
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:² PCMU/8000\r\n",
        "m=audio 99999999999999999999999 RTP/AVP 0\r\n",
        "m=audio 40000 RTP/AVP 4000000000000000000000\r\n",
    ],
)
def test_sdp_malformed_numbers_get_488_and_the_transaction_ends(media: str) -> None:
    body = f"v=0\r\no=a 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n{media}"
    with pytest.raises(SdpError):
        parse_offer(body)
    h = Harness()
    out = h.feed(invite(body=body))
    assert statuses(out) == [100, 488]
    assert "bad SDP" in (out[-1].header("Warning") or "")
    h.feed(request("ACK", to_tag=parse_name_addr(out[-1].header("To") or "").tag))
    _expire(h)
    assert h.ua.stats.internal_errors == 0


@pytest.mark.parametrize("ptime", ["1e400", "²⁰", "inf", "nan", "-20", "20" * 40])
def test_unusable_ptime_falls_back_to_20(ptime: str) -> None:
    body = OFFER.replace("a=ptime:20", f"a=ptime:{ptime}")
    assert parse_offer(body).media.ptime == 20
    h = Harness()
    assert statuses(h.feed(invite(body=body))) == [100]
    assert isinstance(h.events[-1], IncomingCall)


# ---- 2. every server transaction reaches a final response and expires ----------------------------
def test_sdp_negotiation_raising_still_gets_500_and_expires() -> None:
    h = Harness()
    with mock.patch("ivrbot.sip.calls.parse_offer", side_effect=RuntimeError("bug")):
        out = h.feed(invite())
    assert statuses(out) == [100, 500]
    assert h.ua.stats.internal_errors == 1
    assert statuses(h.feed(invite())) == [500]  # a retransmission gets the same final answer
    assert h.ua.active_calls == 0 and not any(isinstance(e, IncomingCall) for e in h.events)
    _expire(h)


def test_non_invite_handler_raising_still_gets_500() -> None:
    h = Harness()
    with mock.patch.object(h.ua, "_on_options", side_effect=RuntimeError("bug")):
        assert statuses(h.feed(request("OPTIONS"))) == [500]
    assert statuses(h.feed(request("OPTIONS"))) == [500]  # absorbed as a retransmission
    _expire(h)


def test_answer_failing_inside_the_core_gets_500_and_ends_the_call() -> None:
    h = Harness()
    h.feed(invite())
    with mock.patch("ivrbot.sip.useragent.Dialog.from_invite", side_effect=RuntimeError("bug")):
        assert h.ua.answer_invite("call-1", Accept(ANSWER), h.now) is False
    assert statuses(h._collect()) == [500]
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["error"]
    assert h.ua.active_calls == 0
    _expire(h)


def test_application_that_never_decides_gets_500_after_64_t1() -> None:
    h = Harness()
    h.feed(invite())
    out = h.advance(32.5, step=0.5)
    assert set(statuses(out)) == {500}
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["app_timeout"]
    assert h.ua.stats.app_timeouts == 1
    assert h.ua.answer_invite("call-1", Accept(ANSWER), h.now) is False  # too late: no 200
    assert h._collect() == []
    _expire(h)


@pytest.mark.parametrize("code", [0, 99, 180, 200, 700, 99999])
def test_reject_with_a_non_final_code_becomes_500(code: int) -> None:
    h = Harness()
    h.feed(invite())
    h.ua.answer_invite("call-1", Reject(code, "weird\r\nX: y"), h.now)
    (resp,) = h._collect()
    assert isinstance(resp, SipResponse) and resp.status == 500 and resp.header("X") is None
    _expire(h)


def test_malformed_record_route_is_400_not_a_failed_answer() -> None:
    h = Harness()
    out = h.feed(invite(extra=["Record-Route: <sip:10.0.0.5;lr"]))
    assert statuses(out) == [400] and h.events == []


# ---- 3. valid messages that were refused ----------------------------------------------------------
def test_max_forwards_with_leading_zeros() -> None:
    h = Harness()
    assert statuses(h.feed(request("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0068"))) == [200]


def test_display_name_ending_in_escaped_backslash() -> None:
    addr = parse_name_addr('"Joe\\\\" <sip:a@h>;tag=1')
    assert addr.display == '"Joe\\\\"' and addr.uri.host == "h" and addr.tag == "1"
    h = Harness()
    raw = request("OPTIONS").replace(b'"Alice"', b'"Joe\\\\"')
    assert statuses(h.feed(raw)) == [200]


def test_max_forwards_zero_is_processed_by_the_uas() -> None:
    h = Harness()
    mf0 = invite(branch="z9hG4bKm").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert statuses(h.feed(mf0)) == [100]
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    ok = h._collect()[-1]
    tag = parse_name_addr(ok.header("To") or "").tag
    h.feed(request("ACK", branch="z9hG4bKa", to_tag=tag).replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    bye = request("BYE", cseq=2, branch="z9hG4bKb", to_tag=tag).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert statuses(h.feed(bye)) == [200]
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["remote_bye"]
    opts = request("OPTIONS", branch="z9hG4bKo").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert statuses(h.feed(opts)) == [200]


# ---- 3. invalid messages: the answer they deserve --------------------------------------------------
def test_foreign_sip_version_gets_505() -> None:
    h = Harness()
    raw = request("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    (resp,) = h.feed(raw)
    assert isinstance(resp, SipResponse) and resp.status == 505 and resp.header("Call-ID") == "call-1"


@pytest.mark.parametrize(
    ("what", "raw"),
    [
        ("unterminated quote in To", request("OPTIONS").replace(b"To: <sip:", b'To: "Bob <sip:')),
        ("LWS in the Request-URI", request("INVITE", body=OFFER, uri="sip:bot@192.0.2.10; lr")),
        ("CSeq beyond 2^31", request("OPTIONS", cseq=2**31)),
        ("CSeq far beyond", request("OPTIONS").replace(b"CSeq: 1", b"CSeq: 36893488147419103232")),
        ("missing From", request("OPTIONS").replace(b"From:", b"X-From:")),
        ("missing To", request("INVITE", body=OFFER).replace(b"To:", b"X-To:")),
        ("two Call-IDs", request("OPTIONS", extra=["i: other-call"])),
        ("two CSeqs", request("OPTIONS", extra=["CSeq: 2 OPTIONS"])),
        ("two From", request("INVITE", body=OFFER, extra=["From: <sip:x@y>;tag=2"])),
        ("<> around the Request-URI", request("OPTIONS", uri="<sip:bot@192.0.2.10>")),
        ("stray separators in Via", request("OPTIONS", extra=["Via: SIP/2.0/UDP 10.0.0.1;;,;,,"])),
    ],
)
def test_answerable_garbage_gets_400(what: str, raw: bytes) -> None:
    h = Harness()
    out = h.feed(raw)
    assert statuses(out) == [400], what
    assert (out[0].header("Warning") or "").startswith("399 ")
    assert h.ua.stats.malformed == 1 and h.ua.stats.internal_errors == 0


def test_unknown_uri_scheme_is_416() -> None:
    h = Harness()
    assert statuses(h.feed(request("OPTIONS", uri="nobodyKnowsThisScheme:opaque"))) == [416]
    assert statuses(h.feed(invite(uri="soap.beep://192.0.2.103:3002", branch="z9hG4bKs"))) == [416]
    assert h.events == []


def test_accept_without_sdp_is_406() -> None:
    h = Harness()
    assert statuses(h.feed(invite(extra=["Accept: text/nobodyKnowsThis"]))) == [100, 406]
    assert statuses(h.feed(invite(extra=["Accept: application/sdp"], call_id="c2", branch="z9hG4bKc2"))) == [100]


def test_ack_with_a_foreign_from_tag_does_not_confirm() -> None:
    h = Harness()
    h.feed(invite())
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    tag = parse_name_addr(h._collect()[-1].header("To") or "").tag
    h.feed(request("ACK", branch="z9hG4bKa", to_tag=tag, from_tag="intruder"))
    assert not any(isinstance(e, CallEstablished) for e in h.events)
    assert h.ua.stats.dropped["stray"] == 1
    assert statuses(h.advance(0.6)) == [200]  # the 200 is still resent: nothing confirmed it
    h.feed(request("ACK", branch="z9hG4bKa2", to_tag=tag))
    assert any(isinstance(e, CallEstablished) for e in h.events)


def test_remote_media_address_must_be_an_ip() -> None:
    """No DNS: a host name in c= would be resolved on the event loop for every RTP packet."""
    body = OFFER.replace("c=IN IP4 10.0.0.9", "c=IN IP4 media.example.com")
    with pytest.raises(SdpError):
        parse_offer(body)
    h = Harness()
    out = h.feed(invite(body=body))
    assert statuses(out) == [100, 488] and "not an IP" in (out[-1].header("Warning") or "")
    assert parse_offer(OFFER.replace("IP4 10.0.0.9", "IP6 2001:db8::9")).media.remote_address == "2001:db8::9"


def test_unanswerable_garbage_is_dropped_and_counted() -> None:
    h = Harness()
    assert h.feed(b"\xff\xfe\x00garbage\r\n\r\n") == []
    assert h.feed(request("OPTIONS").replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/UDP <")) == []
    assert h.ua.stats.dropped["malformed"] == 2 and h.ua.stats.malformed == 2
    assert PEER


def test_reinvite_to_a_host_name_is_488_and_the_call_continues() -> None:
    h = Harness()
    h.feed(invite())
    h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
    tag = parse_name_addr(h._collect()[-1].header("To") or "").tag
    h.feed(request("ACK", branch="z9hG4bKa", to_tag=tag))
    body = OFFER.replace("c=IN IP4 10.0.0.9", "c=IN IP4 media.example.com")
    out = h.feed(request("INVITE", cseq=2, branch="z9hG4bKre", to_tag=tag, body=body))
    assert statuses(out) == [100, 488]
    assert h.ua.active_calls == 1 and not any(isinstance(e, CallEnded) for e in h.events)
