"""Request validation (ivrbot.sip.validation): the identity is parsed once and handed on."""

from __future__ import annotations

from unittest import mock

import pytest
from sipmsg import ANSWER, OFFER, Harness, request, statuses

from ivrbot.sip import address
from ivrbot.sip.events import Accept
from ivrbot.sip.message import SipParseError, SipRequest, SipResponse, parse_message
from ivrbot.sip.validation import RequestIdentity, answerable, validate


def _req(data: bytes) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_validate_returns_the_parsed_identity() -> None:
    ident = validate(_req(request("BYE", cseq=7, to_tag="bot1", from_tag="ft", call_id="abc")))
    assert isinstance(ident, RequestIdentity)
    assert (ident.method, ident.call_id, ident.cseq) == ("BYE", "abc", 7)
    assert (ident.from_tag, ident.to_tag) == ("ft", "bot1")
    assert ident.from_.uri.user == "alice" and ident.to.uri.host == "192.0.2.10"
    assert ident.via.branch == "z9hG4bKb1" and ident.uri.scheme == "sip"
    with pytest.raises(AttributeError):
        ident.cseq = 8  # type: ignore[misc]  # frozen: handlers cannot change what was validated


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (request("OPTIONS", cseq_method="INVITE"), "CSeq method"),
        (request("OPTIONS", extra=["Call-ID: second"]), "more than one Call-ID"),
        (request("OPTIONS", extra=["Max-Forwards: ²"]), "Max-Forwards"),
        (request("OPTIONS", call_id=" "), "Call-ID"),
        (request("INVITE", extra=["Record-Route: <sip:x;lr"]), "unterminated"),
    ],
)
def test_what_earns_a_400_is_named(data: bytes, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        validate(_req(data))


def test_a_request_without_a_parsable_top_via_cannot_be_answered() -> None:
    req = _req(request("OPTIONS"))
    assert answerable(req)
    req.headers.set("Via", "SIP/2.0/UDP")
    assert not answerable(req)


def test_from_and_to_are_parsed_once_per_request_through_a_whole_call() -> None:
    """INVITE, ACK and BYE: the handlers read the validated identity instead of parsing again
    (the responses' To-tag check parses To once more, the dialog its Contact)."""
    h = Harness()
    with mock.patch.object(address, "NameAddress", wraps=address.NameAddress) as made:
        h.feed(request("INVITE", body=OFFER))
        h.ua.answer_invite("call-1", Accept(ANSWER), h.now)
        ok = h._collect()[-1]
        assert isinstance(ok, SipResponse) and ok.status == 200
        invite_parses = made.call_count
        tag = (ok.header("To") or "").split("tag=")[1]
        made.reset_mock()
        h.feed(request("ACK", branch="z9hG4bKack", to_tag=tag))
        ack_parses = made.call_count
        made.reset_mock()
        out = h.feed(request("BYE", cseq=2, branch="z9hG4bKbye", to_tag=tag))
        bye_parses = made.call_count
    assert statuses(out) == [200]
    # From and To in validation; the dialog's Contact and its tagged local party; To again
    # only for the 200's tag check (before: 10, the dialog and CallInfo parsed From and To again)
    assert invite_parses == 5
    assert ack_parses == 2  # before: 4 (the ACK handler parsed From and To again)
    assert bye_parses == 2  # before: 4 (the dispatcher parsed To, the dialog check From)
