"""Receive-side jitter/reorder buffer, sans-IO: ``push`` packets as they arrive, ``pop`` once per 20 ms tick.

Playout is by extended sequence number. After the first packet (or a resync) the buffer waits
``depth`` ticks before playing, so a packet may arrive up to ``depth`` x 20 ms late or out of
order and still be played in order. Per tick:
- the expected packet is there: play it;
- it is missing but later ones are buffered: it is declared lost (counted; the caller conceals);
- the buffer is empty (the peer paused, or a burst is late): underrun, nothing is consumed and the
  buffer re-primes, so a paused stream resumes without dropping its first packets.
An SSRC change or a sequence jump of more than ``resync_gap`` packets restarts the buffer.
If the peer's clock runs fast the buffer is trimmed back to ``max_depth`` (oldest dropped, counted).

Adaptive depth (``adaptive=True``, packets pushed with their ``arrival`` time): the interarrival
jitter is estimated as RFC 3550 6.4.1 does (J += (|D| - J) / 16, D the change in transit time) and
the depth wanted is ``1 + ceil(4 J / 20 ms)`` ticks, at least what a reordered packet needed to play
in order (or one more than the depth a late packet missed) over the last 10 s, clamped to
``min_depth..max_adaptive_depth`` (20-60 ms by default). The buffer starts at ``depth``; a deeper
target is taken at once (one tick of silence, counted ``stretched``); a shallower one only by
dropping silent packets (counted ``trimmed``) once the buffer has held more than the target for a
whole second, so speech is never cut to save latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class PlayoutKind(StrEnum):
    AUDIO = "audio"
    LOST = "lost"  # a gap in the sequence: conceal
    IDLE = "idle"  # nothing to play (not started, priming, or underrun): silence


@dataclass(frozen=True, slots=True)
class Playout:
    kind: PlayoutKind
    payload: bytes = b""


_IDLE = Playout(PlayoutKind.IDLE)  # immutable: one instance serves every idle tick


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    underruns: int = 0
    overflow_dropped: int = 0
    resyncs: int = 0
    timestamp_jumps: int = 0
    trimmed: int = 0
    stretched: int = 0


#: mu-law codes of near-zero samples (|x| <= 64 of 32124): what a silent packet is made of
_QUIET_ULAW = bytes([*range(0xF8, 0x100), *range(0x78, 0x80)])
_TICK_MS = 20.0
#: ticks the buffer must stay above the target before a silent packet is dropped to shrink it
_SHRINK_AFTER = 50
#: packets for which a reordered or late packet keeps the depth it called for (10 s at 20 ms)
_DISORDER_HOLD = 500


def is_quiet(payload: bytes) -> bool:
    """Whether a PCMU payload is silence (or close enough that dropping it is inaudible)."""
    return not payload.translate(None, _QUIET_ULAW)


class JitterBuffer:
    """One per RTP stream; the caller owns the clock."""

    def __init__(
        self,
        depth: int = 3,
        max_depth: int = 10,
        resync_gap: int = 100,
        samples_per_packet: int = 160,
        *,
        adaptive: bool = False,
        min_depth: int = 1,
        max_adaptive_depth: int = 3,
        clock_rate: int = 8000,
    ) -> None:
        if depth < 1 or max_depth < depth:
            raise ValueError("need 1 <= depth <= max_depth")
        if adaptive and not 1 <= min_depth <= max_adaptive_depth <= max_depth:
            raise ValueError("need 1 <= min_depth <= max_adaptive_depth <= max_depth")
        self.adaptive = adaptive
        self.min_depth = min_depth
        self.max_adaptive_depth = max_adaptive_depth
        self.clock_rate = clock_rate
        #: interarrival jitter estimate in timestamp units (RFC 3550 6.4.1)
        self.jitter = 0.0
        self._transit: float | None = None
        self._above = 0  # consecutive ticks with more buffered than the target
        self._floor = 0  # depth the latest reordered or late packet called for
        self._floor_until = 0  # ... until this many packets have been received
        self.depth = min(max(depth, min_depth), max_adaptive_depth) if adaptive else depth
        self.max_depth = max_depth
        self.resync_gap = resync_gap
        self.samples_per_packet = samples_per_packet
        self.stats = JitterStats()
        self._buf: dict[int, bytes] = {}
        self._ssrc: int | None = None
        self._highest: int | None = None  # highest extended seq seen
        self._next: int | None = None  # extended seq to play next
        self._priming = 0  # ticks left before playout starts
        self._last_ts: tuple[int, int] | None = None  # (ext seq, timestamp) of the newest packet

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def started(self) -> bool:
        return self._ssrc is not None

    def _extend(self, seq: int) -> int:
        assert self._highest is not None
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    def _prime(self) -> None:
        if self.adaptive:
            self.depth = max(self.depth, self.target_depth())  # shallower only by dropping silence
        self._priming = self.depth
        self._above = 0

    def _restart(self, ssrc: int, ext: int) -> None:
        self._buf.clear()
        self._ssrc = ssrc
        self._highest = ext
        self._next = ext
        self._prime()
        self._last_ts = None

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate

    def target_depth(self) -> int:
        """Ticks of delay the measured jitter calls for (the fixed depth when not adaptive)."""
        if not self.adaptive:
            return self.depth
        want = 1 + math.ceil(4.0 * self.jitter_ms / _TICK_MS - 1e-9)
        if self.stats.received < self._floor_until:
            want = max(want, self._floor)
        return min(self.max_adaptive_depth, max(self.min_depth, want))

    def _disorder(self, need: int) -> None:
        self._floor = max(self._floor if self.stats.received < self._floor_until else 0, need)
        self._floor_until = self.stats.received + _DISORDER_HOLD

    def _measure(self, timestamp: int, arrival: float) -> None:
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # a timestamp wrap (2^32) between the two packets is not jitter
            d = (d + 2**31) % 2**32 - 2**31
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit

    def push(
        self,
        ssrc: int,
        seq: int,
        timestamp: int,
        payload: bytes,
        samples: int | None = None,
        arrival: float | None = None,
    ) -> None:
        """Accept one packet (``samples`` it carries, default ``samples_per_packet``; ``arrival`` in
        seconds on any monotonic clock, for the jitter estimate); duplicates and late packets are
        counted and dropped."""
        if self._ssrc is None or ssrc != self._ssrc:
            self._transit = None
            if self._ssrc is not None:
                self.stats.resyncs += 1
            self._restart(ssrc, seq)
            ext = seq
        else:
            ext = self._extend(seq)
            assert self._next is not None
            if abs(ext - self._next) > self.resync_gap:
                self.stats.resyncs += 1
                self._restart(ssrc, ext)
        assert self._next is not None and self._highest is not None
        if ext < self._next:
            self.stats.late += 1
            if self.adaptive:
                self._disorder(self.depth + 1)  # the buffer was too shallow for this path
            return
        if ext in self._buf:
            self.stats.duplicate += 1
            return
        self.stats.received += 1
        if self.adaptive:
            if ext < self._highest:
                self._disorder(self._highest - ext + 1)  # played in order only this deep
            if arrival is not None:
                self._measure(timestamp, arrival)
        self._check_timestamp(ext, timestamp, self.samples_per_packet if samples is None else samples)
        self._buf[ext] = payload
        if ext > self._highest:
            self._highest = ext
        while len(self._buf) > self.max_depth:
            oldest = min(self._buf)
            del self._buf[oldest]
            self.stats.overflow_dropped += 1
            self._next = min(self._buf)

    def _check_timestamp(self, ext: int, timestamp: int, samples: int) -> None:
        if self._last_ts is not None and ext > self._last_ts[0]:
            expected = (self._last_ts[1] + (ext - self._last_ts[0]) * samples) & 0xFFFFFFFF
            if timestamp != expected:
                self.stats.timestamp_jumps += 1
        if self._last_ts is None or ext > self._last_ts[0]:
            self._last_ts = (ext, timestamp)

    def pop(self) -> Playout:
        """One 20 ms tick of playout."""
        if self._next is None:
            return _IDLE
        if self._priming > 0:
            self._priming -= 1
            if self._priming > 0 or not self._buf:
                return _IDLE
        if not self._buf:
            self.stats.underruns += 1
            self._prime()
            return _IDLE
        if self.adaptive:
            if self.target_depth() > self.depth:
                # deeper at once: one tick of silence now instead of losing packets until an underrun
                self.depth += 1
                self.stats.stretched += 1
                return _IDLE
            self._shrink()
        payload = self._buf.pop(self._next, None)
        self._next += 1
        if payload is None:
            self.stats.lost += 1
            return Playout(PlayoutKind.LOST)
        return Playout(PlayoutKind.AUDIO, payload)

    def _shrink(self) -> None:
        """Drop one silent packet when the buffer has held more than the target for a second."""
        target = self.target_depth()
        if len(self._buf) <= target:
            self._above = 0
            return
        self._above += 1
        if self._above < _SHRINK_AFTER:
            return
        assert self._next is not None
        head = self._buf.get(self._next)
        if head is not None and is_quiet(head) and self._next + 1 in self._buf:
            del self._buf[self._next]
            self._next += 1
            self.stats.trimmed += 1
            self.depth = max(target, self.depth - 1)
