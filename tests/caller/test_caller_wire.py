"""The caller's own wire code against the bot's: the two independent implementations must agree.

The caller is the bot's test oracle only while it shares none of the bot's SIP/SDP/RTP code
(tests/test_import_graph.py holds that); these properties check that both read each other's bytes.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ivrbot.rtp.dtmf import DtmfDecoder, key_press_payloads
from ivrbot.rtp.packet import RtpPacket, parse_rtp
from ivrbot.sdp import build_answer, parse_offer
from ivrbot.sip.message import SipResponse, parse_message
from ivrbot_tools.caller import wire

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)


@given(
    pt=st.integers(0, 127).filter(lambda p: not 72 <= p <= 76),  # 72-76 would read as RTCP
    seq=st.integers(0, 0xFFFF), ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF), payload=st.binary(max_size=200), marker=st.booleans(),
)
def test_caller_rtp_is_read_by_the_bot_and_the_other_way(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool
) -> None:
    bot = parse_rtp(wire.pack_rtp(pt, seq, ts, ssrc, payload, marker))
    assert (bot.payload_type, bot.sequence, bot.timestamp, bot.ssrc, bot.marker, bot.payload) == (
        pt, seq, ts, ssrc, marker, payload
    )


@given(
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    ext=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))),
    padding=st.integers(0, 255), payload=st.binary(max_size=200), marker=st.booleans(),
)
def test_the_caller_skips_csrcs_extensions_and_padding_as_the_bot_does(
    csrcs: list[int], ext: tuple[int, bytes] | None, padding: int, payload: bytes, marker: bool
) -> None:
    data = RtpPacket(payload_type=0, sequence=7, timestamp=8, ssrc=9, payload=payload, marker=marker,
                     csrcs=tuple(csrcs), extension=ext).to_bytes(padding=padding)
    got = wire.parse_rtp(data)
    assert (got.payload, got.marker, got.sequence, got.timestamp, got.ssrc) == (payload, marker, 7, 8, 9)


@given(key=st.sampled_from(wire.DTMF_EVENTS))
def test_a_caller_key_press_is_one_key_for_the_bot(key: str) -> None:
    assert wire.key_press(key) == key_press_payloads(key)
    decoder = DtmfDecoder()
    heard = [decoder.feed(1, 1000, payload) for _, payload in wire.key_press(key)]
    assert [k for k in heard if k] == [key]


@given(method=st.sampled_from(["INVITE", "ACK", "BYE", "NOTIFY"]), user=tokens, tag=tokens, call_id=tokens,
       body=st.binary(max_size=64))
def test_a_caller_request_parses_in_the_bot_with_the_same_headers(
    method: str, user: str, tag: str, call_id: str, body: bytes
) -> None:
    headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1"), ("From", f"<sip:{user}@h>;tag={tag}"),
               ("To", "<sip:ivr@h>"), ("Call-ID", call_id), ("CSeq", f"1 {method}"), ("Max-Forwards", "70")]
    msg = parse_message(wire.request(method, f"sip:{user}@127.0.0.1", headers, body).to_bytes())
    assert msg.method == method and msg.body == body  # type: ignore[union-attr]
    assert [(k, v) for k, v in msg.headers if k != "Content-Length"] == headers


@given(status=st.integers(100, 699), tag=tokens, routes=st.lists(tokens, max_size=3))
def test_a_bot_response_reads_the_same_in_the_caller(status: int, tag: str, routes: list[str]) -> None:
    resp = SipResponse(status=status, reason="Whatever")
    for k, v in [("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1"), ("To", f"<sip:ivr@h>;tag={tag}"),
                 ("Call-ID", "c1"), ("CSeq", "1 INVITE"), ("Contact", "<sip:ivr@10.0.0.1:5060;transport=udp>")]:
        resp.headers.add(k, v)
    if routes:
        resp.headers.add("Record-Route", ", ".join(f"<sip:{r};lr>" for r in routes))
    got = wire.parse_sip(resp.to_bytes())
    assert got.is_response and got.status == status and got.reason == "Whatever"
    assert wire.tag_of(got.header("To") or "") == tag
    assert wire.uri_of(got.header("Contact") or "") == "sip:ivr@10.0.0.1:5060;transport=udp"
    assert got.header_all("Record-Route") == [f"<sip:{r};lr>" for r in routes]


def test_the_caller_finds_the_audio_port_of_a_bot_answer_behind_a_refused_stream() -> None:
    offer = ("v=0\r\no=c 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
             "m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.7\r\na=rtpmap:96 H264/90000\r\n"
             "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    answer = build_answer(parse_offer(offer).media, address="192.0.2.5", port=31000, session_id=1, session_version=1)
    assert wire.sdp_audio_target(answer.encode(), "203.0.113.1") == ("192.0.2.5", 31000)
    media_c = answer.replace("m=audio 31000 RTP/AVP 0 101\r\n", "m=audio 31000 RTP/AVP 0 101\r\nc=IN IP4 192.0.2.6\r\n")
    assert wire.sdp_audio_target(media_c.encode(), "203.0.113.1") == ("192.0.2.6", 31000)
