"""Property tests: arbitrary and mutated datagrams never raise out of the parser or the core."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmsg import ANSWER, OFFER, request

from ivrbot.sdp import SdpError, parse_offer
from ivrbot.sip.events import Accept, IncomingCall, IncomingReinvite
from ivrbot.sip.message import SipParseError, parse_message
from ivrbot.sip.useragent import UaConfig, UserAgent

SEEDS = [
    request("INVITE", body=OFFER, extra=["Record-Route: <sip:10.0.0.5;lr>"]),
    request("OPTIONS"),
    request("BYE", to_tag="t"),
    request("CANCEL"),
    request("ACK", to_tag="t"),
    request("NOTIFY", to_tag="t", body="SIP/2.0 200 OK\r\n", extra=["Event: refer"]),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\nCSeq: 1 BYE\r\n\r\n",
]

settings.register_profile("sipfuzz", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sipfuzz")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == 2:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b" ", b",", b";", b"<", b">", b'"', b":", b"\r\n "]))
        elif op == 3:
            data = data[:pos]
        else:
            data[pos:pos] = draw(st.binary(max_size=20))
    return bytes(data)


def _core() -> UserAgent:
    return UserAgent(UaConfig("192.0.2.10", 5060))


@given(st.binary(max_size=600))
def test_parser_arbitrary_bytes(data: bytes) -> None:
    try:
        parse_message(data)
    except SipParseError:
        pass


@given(mutated())
def test_parser_mutated(data: bytes) -> None:
    try:
        parse_message(data)
    except SipParseError:
        pass


@given(st.text(max_size=400))
def test_sdp_arbitrary_text(text: str) -> None:
    try:
        parse_offer(text)
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
