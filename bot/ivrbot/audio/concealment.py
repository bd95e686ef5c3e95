"""Packet loss concealment: the first lost frame replays the last good one fading to zero, then silence.

A linear fade avoids the click of a hard cut without inventing a sustained tone; longer gaps are silent.
"""

from __future__ import annotations

import numpy as np


class Concealer:
    """Tracks the last good 20 ms frame of one stream (s16le)."""

    def __init__(self, frame_bytes: int = 320) -> None:
        self._frame_bytes = frame_bytes
        self._last: bytes | None = None
        self._silence = bytes(frame_bytes)
        self._ramp = np.linspace(1.0, 0.0, frame_bytes // 2, dtype=np.float64)

    def good(self, pcm: bytes) -> bytes:
        self._last = pcm
        return pcm

    def lost(self) -> bytes:
        last, self._last = self._last, None
        if last is None or len(last) != self._frame_bytes:
            return self._silence
        faded = np.frombuffer(last, dtype="<i2").astype(np.float64) * self._ramp
        return bytes(np.rint(faded).astype("<i2").tobytes())

    def silence(self) -> bytes:
        self._last = None
        return self._silence
