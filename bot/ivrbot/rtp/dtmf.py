"""RFC 4733 telephone-event payloads, sans-IO.

A key press is many packets sharing one RTP timestamp (the event start): updates with growing
duration, then the end bit, usually sent three times. The decoder reports a key once, on the
first packet it sees of an event timestamp, so a lost start packet still yields the key and the
end retransmissions never repeat it.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

EVENT_KEYS = "0123456789*#ABCD"


class DtmfParseError(ValueError):
    """Not a telephone-event payload."""


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    key: str
    end: bool
    volume: int
    duration: int


def parse_event(payload: bytes) -> DtmfEvent:
    if len(payload) < 4:
        raise DtmfParseError(f"telephone-event payload too short: {len(payload)} bytes")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    if event >= len(EVENT_KEYS):
        raise DtmfParseError(f"telephone-event {event} is not a DTMF key")
    return DtmfEvent(EVENT_KEYS[event], bool(flags & 0x80), flags & 0x3F, duration)


def encode_event(key: str, duration: int, end: bool = False, volume: int = 10) -> bytes:
    idx = EVENT_KEYS.find(key.upper())
    if idx < 0 or len(key) != 1:
        raise ValueError(f"not a DTMF key: {key!r}")
    return struct.pack("!BBH", idx, (0x80 if end else 0) | (volume & 0x3F), min(duration, 0xFFFF))


def key_press_payloads(key: str, packets: int = 5, samples_per_packet: int = 160) -> list[tuple[bool, bytes]]:
    """(marker, payload) for one press as a phone sends it: updates, then the end packet three times."""
    out = [(i == 0, encode_event(key, (i + 1) * samples_per_packet)) for i in range(packets)]
    end = encode_event(key, packets * samples_per_packet, end=True)
    out.extend((False, end) for _ in range(3))
    return out


class DtmfDecoder:
    """Reports each key press once; remembers recent event timestamps per SSRC."""

    def __init__(self, memory: int = 32) -> None:
        self._seen: deque[tuple[int, int]] = deque(maxlen=memory)
        self.malformed = 0
        self.duplicates = 0

    def feed(self, ssrc: int, timestamp: int, payload: bytes) -> str | None:
        try:
            event = parse_event(payload)
        except DtmfParseError:
            self.malformed += 1
            return None
        ident = (ssrc, timestamp)
        if ident in self._seen:
            self.duplicates += 1
            return None
        self._seen.append(ident)
        return event.key
