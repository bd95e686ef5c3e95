"""Send side, sans-IO: the RTP packetizer and the absolute-deadline pacer.

The packetizer starts from random SSRC, sequence and timestamp (RFC 3550 section 5.1), keeps both
continuous for the whole call (timestamps also advance while nothing is sent, e.g. on hold), and
sets the marker bit on the first packet of each talk spurt (RFC 3551 section 4.1). Between replies
the caller gets comfort silence (PCMU 0xFF) so the stream never stalls.

The pacer computes deadline k as ``t0 + k * interval`` from the loop's monotonic clock, so sleep
overshoot never accumulates; if the loop falls more than ``max_lag`` intervals behind it re-anchors
rather than sending a burst.
"""

from __future__ import annotations

import secrets

from ivrbot.audio.g711 import PCMU_SILENCE
from ivrbot.rtp.packet import RtpPacket

PCMU_PAYLOAD_TYPE = 0
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
PACKET_INTERVAL = 0.020


class RtpPacketizer:
    """Builds the outgoing PCMU stream packet by packet."""

    def __init__(
        self,
        payload_type: int = PCMU_PAYLOAD_TYPE,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        samples_per_packet: int = SAMPLES_PER_PACKET,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self.samples_per_packet = samples_per_packet
        self._silence = bytes([PCMU_SILENCE]) * samples_per_packet
        self._in_spurt = False

    @property
    def in_spurt(self) -> bool:
        """True between the first speech packet of a spurt and the next silence."""
        return self._in_spurt

    def audio(self, payload: bytes) -> bytes:
        """Next packet carrying speech; the first after silence gets the marker bit."""
        marker = not self._in_spurt
        self._in_spurt = True
        return self._emit(payload, marker)

    def silence(self) -> bytes:
        """Next packet of comfort silence; ends the current talk spurt."""
        self._in_spurt = False
        return self._emit(self._silence, False)

    def skip(self) -> None:
        """A tick on which nothing is sent (hold): time moves on, the sequence does not."""
        self._in_spurt = False
        self.timestamp = (self.timestamp + self.samples_per_packet) & 0xFFFFFFFF

    def _emit(self, payload: bytes, marker: bool) -> bytes:
        pkt = RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload, marker=marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.samples_per_packet) & 0xFFFFFFFF
        return pkt.to_bytes()


class Pacer:
    """Absolute deadlines on a monotonic clock: no cumulative drift over a long call."""

    def __init__(self, start: float, interval: float = PACKET_INTERVAL, max_lag: int = 5) -> None:
        self.interval = interval
        self.max_lag = max_lag
        self._t0 = start
        self._k = 0
        self.reanchors = 0

    def next_deadline(self, now: float) -> float:
        """Deadline of the next tick; re-anchors to ``now`` after a stall longer than ``max_lag`` ticks."""
        self._k += 1
        deadline = self._t0 + self._k * self.interval
        if now - deadline > self.max_lag * self.interval:
            self.reanchors += 1
            self._t0 = now
            self._k = 0
            return now
        return deadline
