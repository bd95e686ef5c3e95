"""SIP message parsing and building as RFC 3261 allows it."""

from __future__ import annotations

import pytest

from ivrbot.sip.address import parse_cseq, parse_name_addr, parse_uri, parse_via
from ivrbot.sip.message import SipParseError, SipRequest, SipResponse, is_keepalive, parse_message, split_quoted


def test_compact_forms_and_any_case() -> None:
    raw = (
        b"INVITE sip:bot@h SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        b"f: <sip:a@x>;tag=1\r\nt: <sip:b@y>\r\ni: abc\r\nCSEQ: 1 INVITE\r\n"
        b"m: <sip:a@10.0.0.1>\r\nc: application/sdp\r\nk: timer\r\ns: hi\r\no: refer\r\n"
        b"r: <sip:c@z>\r\ncall-id: ignored-second\r\nl: 3\r\n\r\nabc"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.header("Via") == "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1"
    assert msg.header("from") == "<sip:a@x>;tag=1"
    assert msg.header("CALL-ID") == "abc"
    assert msg.header_all("i") == ["abc", "ignored-second"]
    assert msg.header("Contact") == "<sip:a@10.0.0.1>"
    assert msg.header("Content-Type") == "application/sdp"
    assert msg.header("Supported") == "timer"
    assert msg.header("Subject") == "hi"
    assert msg.header("Event") == "refer"
    assert msg.header("Refer-To") == "<sip:c@z>"
    assert msg.header("cseq") == "1 INVITE"
    assert msg.body == b"abc"


def test_list_values_in_one_header_and_repeated() -> None:
    raw = (
        b"OPTIONS sip:bot@h SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP p1:5060;branch=z9hG4bKa, SIP/2.0/UDP p2;branch=z9hG4bKb\r\n"
        b"Via: SIP/2.0/UDP p3;branch=z9hG4bKc\r\n"
        b"Record-Route: <sip:p1;lr>,<sip:p2;lr>\r\n"
        b'Contact: "Doe, John" <sip:j@x>\r\n'
        b"Allow: INVITE, ACK\r\nAllow: BYE\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 2 OPTIONS\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.header_all("Via") == [
        "SIP/2.0/UDP p1:5060;branch=z9hG4bKa",
        "SIP/2.0/UDP p2;branch=z9hG4bKb",
        "SIP/2.0/UDP p3;branch=z9hG4bKc",
    ]
    assert msg.header_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert msg.header_all("Contact") == ['"Doe, John" <sip:j@x>']
    assert msg.header_all("Allow") == ["INVITE", "ACK", "BYE"]


def test_folded_lines_are_unfolded() -> None:
    raw = (
        b"OPTIONS sip:bot@h SIP/2.0\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bKa\r\n"
        b"Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 2 OPTIONS\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.header("Subject") == "I know you're there, pick up the phone and talk to me!"


def test_content_length_truncated_body_is_an_error_with_partial() -> None:
    raw = b"INVITE sip:b@h SIP/2.0\r\nCall-ID: x\r\nContent-Length: 50\r\n\r\nv=0\r\n"
    with pytest.raises(SipParseError) as err:
        parse_message(raw)
    assert "truncated" in err.value.reason
    assert isinstance(err.value.partial, SipRequest)
    assert err.value.partial.header("Call-ID") == "x"


def test_content_length_extra_bytes_ignored_and_absent_means_rest() -> None:
    raw = b"MESSAGE sip:b@h SIP/2.0\r\nContent-Length: 3\r\n\r\nabcGARBAGE"
    assert parse_message(raw).body == b"abc"
    assert parse_message(b"MESSAGE sip:b@h SIP/2.0\r\n\r\nhello").body == b"hello"


def test_leading_crlf_and_lf_only_and_keepalive() -> None:
    msg = parse_message(b"\r\n\r\nSIP/2.0 180 Ringing\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\n\n")
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert is_keepalive(b"\r\n\r\n")
    assert not is_keepalive(b"OPTIONS")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"INVITE sip:b@h\r\n\r\n",
        b"INVITE  SIP/2.0\r\n\r\n",
        b"SIP/2.0 99 Odd\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"INV(ITE sip:b@h SIP/2.0\r\n\r\n",
        b"INVITE sip:b@h SIP/2.0\r\nBad Header Line\r\n\r\n",
        b"INVITE sip:b@h SIP/2.0\r\n folded-first: x\r\n\r\n",
        b"INVITE sip:b@h SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"INVITE sip:b@h SIP/2.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"INVITE nocolon SIP/2.0\r\n\r\n",
    ],
)
def test_malformed_raise_parse_error(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw)


def test_foreign_version_is_505() -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(b"INVITE sip:b@h SIP/3.0\r\n\r\n")
    assert err.value.status == 505


def test_build_round_trip_recomputes_content_length() -> None:
    req = SipRequest(method="BYE", uri="sip:a@10.0.0.1")
    req.headers.add("Via", "SIP/2.0/UDP x;branch=z9hG4bK1")
    req.headers.add("Content-Length", "999")
    req.body = b"hello"
    again = parse_message(req.to_bytes())
    assert isinstance(again, SipRequest)
    assert again.header("Content-Length") == "5"
    assert again.body == b"hello"
    assert again.uri == "sip:a@10.0.0.1"


def test_name_addr_forms() -> None:
    a = parse_name_addr('"Doe, \\"J\\"" <sip:john@x.org:5070;transport=udp>;tag=abc')
    assert a.display == '"Doe, \\"J\\""'
    assert a.uri.host == "x.org" and a.uri.port == 5070 and a.uri.params == {"transport": "udp"}
    assert a.tag == "abc"
    b = parse_name_addr("sip:bob@10.0.0.1;tag=xyz")
    assert b.tag == "xyz" and b.uri.params == {}
    c = parse_name_addr("Bob <sips:bob@[2001:db8::1]:5061>")
    assert c.uri.host == "[2001:db8::1]" and c.uri.port == 5061 and c.tag is None
    assert str(parse_name_addr("<sip:p1;lr>").uri) == "sip:p1;lr"
    assert parse_uri("tel:+4930123").scheme == "tel"
    for bad in ["", "<sip:x", "no uri here", "sip:", "<sip:host:99999>"]:
        with pytest.raises(SipParseError):
            parse_name_addr(bad)


def test_via_and_cseq() -> None:
    v = parse_via("SIP / 2.0 / UDP 10.0.0.1:5070 ;branch=z9hG4bKx;rport")
    assert (v.transport, v.host, v.port, v.branch) == ("UDP", "10.0.0.1", 5070, "z9hG4bKx")
    assert v.params["rport"] is None
    assert parse_cseq("  42   INVITE ") == (42, "INVITE")
    for bad in ["x INVITE", "1", "99999999999 INVITE"]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)
    assert split_quoted('a, "b,c", <d,e>', ",") == ["a", ' "b,c"', " <d,e>"]
