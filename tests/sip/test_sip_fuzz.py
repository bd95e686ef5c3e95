"""Property tests: for any datagrams the parser returns a message or raises SipParseError, the SDP
parser returns an offer or raises SdpError, and the core never lets an exception out.

The generators (``hostile.py``) aim at the classes that broke before: Unicode digits, lone high
bytes, oversized numbers in numeric fields, quoting and escaping in display names, duplicated
headers.
"""

from __future__ import annotations

from typing import TypeVar

from hostile import NON_ASCII_DIGITS, Chooser, hostile_number, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmsg import ANSWER, OFFER, request

from ivrbot.sdp import SdpError, parse_offer
from ivrbot.sip.events import Accept, IncomingCall, IncomingReinvite
from ivrbot.sip.message import SipParseError, parse_message
from ivrbot.sip.useragent import UaConfig, UserAgent

T = TypeVar("T")

SEEDS = [
    request("INVITE", body=OFFER, extra=["Record-Route: <sip:10.0.0.5;lr>"]),
    request("INVITE", body=OFFER).replace(b'"Alice"', b'"J Rosenberg \\\\\\""'),
    request("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0068"),
    request("BYE", to_tag="t"),
    request("CANCEL"),
    request("ACK", to_tag="t"),
    request("NOTIFY", to_tag="t", body="SIP/2.0 200 OK\r\n", extra=["Event: refer"]),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
]

settings.register_profile("sipfuzz", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sipfuzz")


class DrawChooser:
    """hostile.Chooser over hypothesis draws (so failures shrink)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def choice(self, seq: tuple[T, ...] | list[T]) -> T:
        return self._draw(st.sampled_from(seq))

    def randint(self, a: int, b: int) -> int:
        return self._draw(st.integers(a, b))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    c: Chooser = DrawChooser(draw)
    return mutate(draw(st.sampled_from(SEEDS)), c)


@st.composite
def hostile_numbers(draw: st.DrawFn) -> str:
    return hostile_number(DrawChooser(draw))


def _core() -> UserAgent:
    return UserAgent(UaConfig("192.0.2.10", 5060))


def _parses_or_refuses(data: bytes) -> None:
    try:
        parse_message(data)
    except SipParseError:
        pass


@given(st.binary(max_size=600))
def test_parser_arbitrary_bytes(data: bytes) -> None:
    _parses_or_refuses(data)


@given(mutated())
def test_parser_mutated(data: bytes) -> None:
    _parses_or_refuses(data)


@given(st.sampled_from(["Content-Length", "CSeq", "Max-Forwards", "Via", "status"]), hostile_numbers())
def test_numeric_fields_take_ascii_digits_only(field: str, number: str) -> None:
    base = request("OPTIONS", branch="z9hG4bKn")
    if field == "status":
        data = f"SIP/2.0 {number} OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n".encode()
    elif field == "Via":
        data = base.replace(b"10.0.0.5:5060", f"10.0.0.5:{number}".encode())
    else:
        data = base.replace(f"{field}: ".encode(), f"{field}: {number} ".encode().replace(b"  ", b" "), 1)
    ua = _core()
    ua.feed(data, ("10.0.0.5", 5060), 0.0)
    assert ua.stats.internal_errors == 0
    answers = [parse_message(d) for d, _ in ua.take_datagrams()]
    if any(ch in number for ch in NON_ASCII_DIGITS):
        # A Unicode digit is never read as a number: no 200 to a request it is part of.
        assert all(getattr(m, "status", 0) != 200 for m in answers)


@given(st.text(max_size=400))
def test_sdp_arbitrary_text(text: str) -> None:
    try:
        parse_offer(text)
    except SdpError:
        pass


SDP_SEEDS = [
    OFFER,
    OFFER.replace("a=ptime:20", "a=ptime:1e400"),
    "v=0\r\no=a 1 1 IN IP4 10.0.0.9\r\ns=-\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nc=IN IP4 10.0.0.9\r\n"
    "m=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n",
]


@given(st.data())
def test_sdp_mutated(data: st.DataObject) -> None:
    c = DrawChooser(data.draw)
    body = mutate(data.draw(st.sampled_from(SDP_SEEDS)).encode(), c)
    try:
        parse_offer(body)
    except SdpError:
        pass


@given(st.lists(st.one_of(mutated(), st.binary(max_size=200)), min_size=1, max_size=12))
def test_core_survives_sequences(datagrams: list[bytes]) -> None:
    ua = _core()
    now = 0.0
    for d in datagrams:
        ua.feed(d, ("10.0.0.5", 5060), now)
        for ev in ua.take_events():
            if isinstance(ev, IncomingCall):
                ua.answer_invite(ev.call.call_id, Accept(ANSWER), now)
            elif isinstance(ev, IncomingReinvite):
                ua.answer_reinvite(ev.call.call_id, Accept(ANSWER), now)
        for data, _addr in ua.take_datagrams():
            parse_message(data)  # everything the bot sends parses
        now += 1.0
        ua.tick(now)
    ua.tick(now + 100)
    assert ua.stats.internal_errors == 0
    assert ua.open_transactions == 0


@given(st.lists(mutated(), min_size=1, max_size=30))
def test_garbage_does_not_disturb_a_live_call(datagrams: list[bytes]) -> None:
    ua = _core()
    ua.feed(request("INVITE", call_id="live", body=OFFER, branch="z9hG4bKlive"), ("10.0.0.5", 5060), 0.0)
    ua.answer_invite("live", Accept(ANSWER), 0.0)
    ok = next(d for d, _ in ua.take_datagrams() if d.startswith(b"SIP/2.0 200"))
    to_line = next(line for line in ok.split(b"\r\n") if line.startswith(b"To:"))
    tag = to_line.split(b";tag=")[1].decode()
    ua.feed(request("ACK", call_id="live", branch="z9hG4bKlack", to_tag=tag), ("10.0.0.5", 5060), 0.1)
    for d in datagrams:
        ua.feed(d, ("10.0.0.5", 5060), 0.2)
    ua.take_datagrams()
    ua.feed(request("BYE", call_id="live", cseq=99, branch="z9hG4bKlbye", to_tag=tag), ("10.0.0.5", 5060), 0.3)
    out = ua.take_datagrams()
    assert any(d.startswith(b"SIP/2.0 200") and b"99 BYE" in d for d, _ in out)
    assert ua.stats.internal_errors == 0
