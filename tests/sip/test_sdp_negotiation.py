"""SDP offer/answer: PCMU + telephone-event, ptime, direction, c= levels, refusals."""

from __future__ import annotations

import pytest
from sipmsg import OFFER

from ivrbot.sdp import NoCommonCodec, SdpError, build_answer, parse_offer, parse_sdp


def sdp(media: str, *, session_c: str | None = "c=IN IP4 10.0.0.9", extra_session: str = "") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 10.0.0.9", "s=-"]
    if session_c:
        lines.append(session_c)
    lines.append("t=0 0")
    if extra_session:
        lines.append(extra_session)
    return "\r\n".join(lines) + "\r\n" + media


def test_offer_negotiates_pcmu_and_offered_dtmf_pt() -> None:
    offer = parse_offer(OFFER)
    m = offer.media
    assert (m.remote_address, m.remote_port, m.audio_pt, m.dtmf_pt, m.ptime) == ("10.0.0.9", 40000, 0, 101, 20)
    assert m.direction == "sendrecv" and m.send and m.receive and not m.on_hold


def test_dtmf_pt_follows_offer_and_is_omitted_if_absent() -> None:
    m = parse_offer(sdp("m=audio 5000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n")).media
    assert m.dtmf_pt == 96
    m2 = parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\n")).media
    assert m2.dtmf_pt is None
    answer = build_answer(m2, address="192.0.2.10", port=30000, session_id=7, session_version=1)
    assert "telephone-event" not in answer
    assert "m=audio 30000 RTP/AVP 0\r\n" in answer


def test_answer_contents() -> None:
    m = parse_offer(OFFER).media
    answer = build_answer(m, address="192.0.2.10", port=30000, session_id=7, session_version=2)
    lines = answer.split("\r\n")
    assert "c=IN IP4 192.0.2.10" in lines
    assert "o=ivrbot 7 2 IN IP4 192.0.2.10" in lines
    assert "m=audio 30000 RTP/AVP 0 101" in lines
    assert "a=rtpmap:0 PCMU/8000" in lines and "a=rtpmap:101 telephone-event/8000" in lines
    assert "a=ptime:20" in lines and "a=sendrecv" in lines
    assert parse_offer(answer).media.remote_port == 30000


def test_loopback_needs_explicit_permission() -> None:
    m = parse_offer(OFFER).media
    with pytest.raises(ValueError):
        build_answer(m, address="127.0.0.1", port=30000, session_id=1, session_version=1)
    assert "c=IN IP4 127.0.0.1" in build_answer(
        m, address="127.0.0.1", port=30000, session_id=1, session_version=1, allow_loopback=True
    )


@pytest.mark.parametrize(
    ("direction", "answer_dir", "send", "receive"),
    [
        ("sendrecv", "sendrecv", True, True),
        ("sendonly", "recvonly", False, True),
        ("recvonly", "sendonly", True, False),
        ("inactive", "inactive", False, False),
    ],
)
def test_direction_mirrored(direction: str, answer_dir: str, send: bool, receive: bool) -> None:
    m = parse_offer(sdp(f"m=audio 5000 RTP/AVP 0\r\na={direction}\r\n")).media
    assert m.direction == answer_dir and m.send is send and m.receive is receive
    answer = build_answer(m, address="192.0.2.10", port=1, session_id=1, session_version=1)
    assert f"a={answer_dir}" in answer


def test_session_level_direction_and_ptime_and_hold_address() -> None:
    m = parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\n", extra_session="a=sendonly\r\na=ptime:30")).media
    assert m.direction == "recvonly" and m.ptime == 30
    held = parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\n", session_c="c=IN IP4 0.0.0.0")).media
    assert held.on_hold and not held.send


def test_media_level_c_overrides_session_level() -> None:
    m = parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\nc=IN IP4 10.1.1.1\r\n")).media
    assert m.remote_address == "10.1.1.1"
    m2 = parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\nc=IN IP4 10.1.1.1\r\n", session_c=None)).media
    assert m2.remote_address == "10.1.1.1"
    with pytest.raises(SdpError):
        parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\n", session_c=None))


def test_odd_ptime_falls_back_to_20() -> None:
    assert parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\na=ptime:7\r\n")).media.ptime == 20
    assert parse_offer(sdp("m=audio 5000 RTP/AVP 0\r\na=ptime:x\r\n")).media.ptime == 20


def test_other_streams_refused_with_port_zero_in_same_order() -> None:
    offer = sdp("m=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 5000 RTP/AVP 0\r\n")
    m = parse_offer(offer).media
    answer = build_answer(m, address="192.0.2.10", port=30000, session_id=1, session_version=1)
    session = parse_sdp(answer)
    assert [(x.media, x.port) for x in session.media] == [("video", 0), ("audio", 30000)]


def test_dynamic_pcmu_pt_accepted() -> None:
    m = parse_offer(sdp("m=audio 5000 RTP/AVP 98\r\na=rtpmap:98 pcmu/8000\r\n")).media
    assert m.audio_pt == 98


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 5000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        "m=audio 5000 RTP/AVP 9 18\r\n",
        "m=audio 0 RTP/AVP 0\r\n",
        "m=audio 5000 RTP/SAVP 0\r\n",
        "m=video 5000 RTP/AVP 0\r\n",
        "m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/16000\r\n",
    ],
)
def test_no_common_codec(media: str) -> None:
    with pytest.raises(NoCommonCodec):
        parse_offer(sdp(media))


@pytest.mark.parametrize("text", ["", "hello", "v=1\r\n", "v=0\r\nm=audio x RTP/AVP 0\r\n", "v=0\r\nbogus\r\n"])
def test_garbage_is_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        parse_offer(text)
