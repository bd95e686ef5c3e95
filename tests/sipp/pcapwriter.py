"""A small pcap writer: mu-law audio -> RTP/UDP/IPv4/Ethernet packets that sipp can replay.

sipp's ``play_pcap_audio`` replays the UDP payloads of a capture with its timing, so the
capture only needs to be a valid libpcap file of RTP packets 20 ms apart.
"""

from __future__ import annotations

import struct
from pathlib import Path

PCMU_PT = 0
SAMPLES_PER_PACKET = 160


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def _frame(udp_payload: bytes, src_port: int = 6000, dst_port: int = 7000) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(udp_payload), 0) + udp_payload
    ip_wo_sum = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    ip = ip_wo_sum[:10] + struct.pack("!H", _ip_checksum(ip_wo_sum)) + ip_wo_sum[12:]
    eth = b"\x00" * 12 + b"\x08\x00"
    return eth + ip + udp


def write_rtp_pcap(path: Path, ulaw: bytes, *, ssrc: int = 0x1234ABCD, ptime_ms: int = 20) -> int:
    """Write ``ulaw`` as PCMU RTP packets; returns the number of packets written."""
    per = 8 * ptime_ms
    chunks = [ulaw[i : i + per] for i in range(0, len(ulaw) - per + 1, per)]
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # DLT_EN10MB
        for i, chunk in enumerate(chunks):
            t_us = i * ptime_ms * 1000
            frame = _frame(rtp_packet(PCMU_PT, 1000 + i, i * per, ssrc, chunk, marker=(i == 0)))
            f.write(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return len(chunks)
