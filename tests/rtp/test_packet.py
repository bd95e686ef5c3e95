import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot.rtp.packet import RtpPacket, RtpParseError, parse_rtp


def test_round_trip_with_csrc_extension_padding_and_marker() -> None:
    pkt = RtpPacket(
        0, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"\x01\x02\x03", marker=True, csrcs=(1, 2), extension=(0xBEDE, b"abcd")
    )
    data = pkt.to_bytes(padding=4)
    assert data[0] & 0x20 and data[0] & 0x10 and data[0] & 0x0F == 2
    assert parse_rtp(data) == pkt


def test_parses_a_hand_built_packet() -> None:
    data = bytes([0x80, 0x80 | 101]) + struct.pack("!HII", 7, 1234, 42) + b"\xff" * 160
    pkt = parse_rtp(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.marker) == (101, 7, 1234, 42, True)
    assert pkt.payload == b"\xff" * 160 and pkt.csrcs == () and pkt.extension is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "too short"),
        (bytes([0x40, 0]) + bytes(10), "version"),
        (bytes([0xA0, 0]) + bytes(10) + b"\x00", "zero padding"),
        (bytes([0xA0, 0]) + bytes(10) + b"\x40", "padding count"),
        (bytes([0x83, 0]) + bytes(10) + bytes(8), "CSRC"),
        (bytes([0x90, 0]) + bytes(10) + b"\x00\x00\x00\x05", "extension"),
        (bytes([0x90, 0]) + bytes(10) + b"\x00", "extension"),
        (bytes([0x80, 0xC8]) + bytes(10), "RTCP"),
    ],
)
def test_rejects_invalid_packets_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        parse_rtp(data)


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127).filter(lambda p: not 72 <= p <= 76),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
)


@given(packets, st.integers(0, 255))
def test_build_then_parse_is_identity(pkt: RtpPacket, padding: int) -> None:
    assert parse_rtp(pkt.to_bytes(padding=padding)) == pkt


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_parse_error(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except RtpParseError:
        return
    assert len(pkt.payload) <= len(data) - 12


@settings(max_examples=500)
@given(packets, st.data())
def test_mutated_packets_never_raise_anything_but_parse_error(pkt: RtpPacket, data: st.DataObject) -> None:
    raw = bytearray(pkt.to_bytes(padding=data.draw(st.integers(0, 8))))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        if op == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del raw[data.draw(st.integers(0, len(raw))):]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=8))
    try:
        parse_rtp(bytes(raw))
    except RtpParseError:
        pass
