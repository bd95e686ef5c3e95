"""What the caller heard, with arrival times, so latency is measured where the caller is."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

#: mean absolute amplitude above which a received frame counts as speech (PCMU silence decodes to 0)
AUDIBLE_LEVEL = 150.0


@dataclass
class HeardPacket:
    arrival: float
    sequence: int
    timestamp: int
    payload_type: int
    marker: bool
    level: float


@dataclass
class CallRecord:
    call_id: str
    status: int = 0
    heard: list[HeardPacket] = field(default_factory=list)
    pcm: bytearray = field(default_factory=bytearray)
    bye_from_bot: bool = False
    refer_to: str | None = None
    requests_from_bot: list[str] = field(default_factory=list)
    speech_sent_until: float | None = None
    #: arrival times of the audible packets, in order (the wait loops poll it: no rescans of `heard`)
    audible: list[float] = field(default_factory=list)

    def add(self, packet: HeardPacket) -> None:
        self.heard.append(packet)
        if packet.level >= AUDIBLE_LEVEL:
            self.audible.append(packet.arrival)

    def first_audible_after(self, t: float) -> float | None:
        i = bisect.bisect_left(self.audible, t)
        return self.audible[i] if i < len(self.audible) else None

    def audible_seconds(self, since: float = 0.0) -> float:
        return 0.02 * (len(self.audible) - bisect.bisect_left(self.audible, since))
