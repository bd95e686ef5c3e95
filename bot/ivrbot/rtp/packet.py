"""RTP fixed header codec (RFC 3550 section 5.1), sans-IO.

Everything a peer may legally send is accepted (CSRC list, header extension, padding);
anything else raises ``RtpParseError`` so the caller can drop and count it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
_FIXED = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    """The datagram is not a valid RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; ``extension`` is (profile, data) when the X bit was set."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def to_bytes(self, padding: int = 0) -> bytes:
        """Serialise; ``padding`` (0-255) appends that many padding bytes with the P bit."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError("payload type out of range")
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs")
        if not 0 <= padding <= 255:
            raise ValueError("padding out of range")
        b0 = (RTP_VERSION << 6) | (0x20 if padding else 0) | (0x10 if self.extension else 0) | len(self.csrcs)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)]
        parts.extend(struct.pack("!I", c & 0xFFFFFFFF) for c in self.csrcs)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("extension data must be a multiple of 4 bytes")
            parts.append(struct.pack("!HH", profile & 0xFFFF, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if padding:
            parts.append(bytes(padding - 1) + bytes([padding]))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one datagram; raises ``RtpParseError`` on anything RFC 3550 does not allow."""
    if len(data) < _FIXED.size:
        raise RtpParseError(f"datagram too short for RTP: {len(data)} bytes")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
    end = len(data)
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0:
            raise RtpParseError("padding bit set with a zero padding count")
        end -= pad
        if end < _FIXED.size:
            raise RtpParseError("padding count larger than the packet")
    offset = _FIXED.size
    cc = b0 & 0x0F
    csrc_end = offset + 4 * cc
    if csrc_end > end:
        raise RtpParseError("CSRC list runs past the end of the packet")
    csrcs = struct.unpack_from(f"!{cc}I", data, offset) if cc else ()
    offset = csrc_end
    extension: tuple[int, bytes] | None = None
    if b0 & 0x10:
        if offset + 4 > end:
            raise RtpParseError("header extension runs past the end of the packet")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        ext_end = offset + 4 * words
        if ext_end > end:
            raise RtpParseError("header extension runs past the end of the packet")
        extension = (profile, bytes(data[offset:ext_end]))
        offset = ext_end
    if offset > end:
        raise RtpParseError("padding count larger than the packet")
    pt = b1 & 0x7F
    if 72 <= pt <= 76:
        raise RtpParseError(f"payload type {pt} collides with RTCP")
    return RtpPacket(
        payload_type=pt,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
    )
