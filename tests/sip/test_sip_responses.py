"""Response building (ivrbot.sip.responses) as plain functions: a request in, a response out."""

from __future__ import annotations

from sipmsg import ANSWER, OFFER, request

from ivrbot.sip.address import parse_name_addr, parse_via
from ivrbot.sip.events import Reject
from ivrbot.sip.message import SipRequest, SipResponse, parse_message
from ivrbot.sip.responses import ALLOW, build_response, refusal, stamp_via, warning

SOURCE = ("10.0.0.5", 5999)


def _req(method: str = "INVITE", **kw: object) -> SipRequest:
    msg = parse_message(request(method, **kw))  # type: ignore[arg-type]
    assert isinstance(msg, SipRequest)
    return msg


def _roundtrip(resp: SipResponse) -> SipResponse:
    msg = parse_message(resp.to_bytes())
    assert isinstance(msg, SipResponse)
    return msg


def test_identity_headers_are_copied_and_the_to_tag_added() -> None:
    req = _req("OPTIONS", extra=["Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsecond"])
    resp = _roundtrip(build_response(req, 200, source=SOURCE, server="ivrbot", to_tag="t1"))
    assert (resp.status, resp.reason) == (200, "OK")
    vias = resp.header_all("Via")
    assert len(vias) == 2 and vias[1] == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsecond"
    assert parse_via(vias[0]).branch == "z9hG4bKb1"
    for name in ("From", "Call-ID", "CSeq"):
        assert resp.header(name) == req.header(name)
    assert parse_name_addr(resp.header("To") or "").tag == "t1"
    assert resp.header("Server") == "ivrbot"
    for absent in ("Allow", "Accept", "Supported", "Retry-After", "Contact", "Content-Type", "Record-Route"):
        assert resp.header(absent) is None, absent


def test_a_to_tag_already_there_is_kept_and_100_gets_none() -> None:
    req = _req("BYE", to_tag="mine")
    resp = build_response(req, 200, source=SOURCE, server="s", to_tag="other")
    assert parse_name_addr(resp.header("To") or "").tag == "mine"
    trying = build_response(_req(), 100, source=SOURCE, server="s", to_tag="t")
    assert parse_name_addr(trying.header("To") or "").tag is None


def test_top_via_gets_received_and_rport() -> None:
    assert stamp_via("SIP/2.0/UDP phone.example;branch=z9hG4bKa;rport", SOURCE) == (
        "SIP/2.0/UDP phone.example;branch=z9hG4bKa;rport=5999;received=10.0.0.5"
    )
    # No rport: received= only where the sent-by is not the source address.
    assert stamp_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa", SOURCE) == "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa"
    assert "received=10.0.0.5" in stamp_via("SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKa", SOURCE)
    assert stamp_via("garbage", SOURCE) == "garbage"


def test_a_200_to_invite_carries_contact_allow_supported_record_route_and_sdp() -> None:
    req = _req(body=OFFER, extra=["Record-Route: <sip:10.0.0.1;lr>", "Record-Route: <sip:10.0.0.2;lr>"])
    resp = _roundtrip(
        build_response(
            req, 200, source=SOURCE, server="s", to_tag="t", contact="<sip:bot@192.0.2.10>",
            allow=True, supported=True, sdp=ANSWER,
        )
    )
    assert resp.header_all("Record-Route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
    assert resp.header("Contact") == "<sip:bot@192.0.2.10>"
    assert ", ".join(resp.header_all("Allow")) == ALLOW
    assert resp.header("Supported") == ""
    assert resp.header("Content-Type") == "application/sdp"
    assert resp.body == ANSWER.encode() and resp.header("Content-Length") == str(len(ANSWER))
    # Record-Route belongs to the dialog-making 2xx only.
    refused = build_response(req, 486, source=SOURCE, server="s", to_tag="t")
    assert refused.header("Record-Route") is None


def test_options_retry_after_reason_and_extra() -> None:
    req = _req("OPTIONS")
    resp = build_response(
        req, 503, source=SOURCE, server="s", accept=True, retry_after=30, reason="Draining",
        extra=[("Warning", '399 h "x"')],
    )
    assert (resp.reason, resp.header("Accept"), resp.header("Retry-After")) == ("Draining", "application/sdp", "30")
    assert resp.header("Warning") == '399 h "x"'
    assert build_response(req, 599, source=SOURCE, server="s").reason == "Unknown"


def test_a_400_copies_what_is_there_and_leaves_out_the_rest() -> None:
    req = SipRequest(method="INVITE", uri="sip:x@y")
    req.headers.add("Via", "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKq")
    req.headers.add("To", '"unterminated <sip:a@b>')  # unparsable: copied as it is, no tag
    resp = _roundtrip(build_response(req, 400, source=SOURCE, server="s", to_tag="t"))
    assert resp.header("To") == '"unterminated <sip:a@b>'
    assert resp.header("From") is None and resp.header("Call-ID") is None and resp.header("CSeq") is None


def test_refusal_keeps_final_codes_and_replaces_the_rest_by_500() -> None:
    assert refusal(Reject(486, "Busy Here Now", retry_after=5)) == (486, "Busy Here Now", 5)
    assert refusal(Reject(200, "Fine")) == (500, None, None)
    assert refusal(Reject(1000)) == (500, None, None)
    assert refusal(Reject(603, "bad\r\nInjected: 1")) == (603, None, None)


def test_warning_text_is_a_safe_quoted_string() -> None:
    assert warning(399, "bot.example", 'bad "quote" \\ and \x00') == "399 bot.example \"bad 'quote' ' and '\""
    assert len(warning(399, "h", "x" * 500)) < 120
