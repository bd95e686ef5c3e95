"""Packet loss concealment: the first lost frame replays the last good one fading to zero, then silence.

A linear fade avoids the click of a hard cut without inventing a sustained tone; longer gaps are silent.
"""

from __future__ import annotations

import numpy as np


class Concealer:
    """Tracks the last good packet of one stream (s16le)."""

    def __init__(self, frame_bytes: int = 320) -> None:
        self._frame_bytes = frame_bytes
        self._last: bytes | None = None

    def good(self, pcm: bytes) -> bytes:
        self._last = pcm
        return pcm

    def lost(self) -> bytes:
        """Replacement for one lost packet, as long as the last good one (or a 20 ms silence)."""
        last, self._last = self._last, None
        if last is None:
            return bytes(self._frame_bytes)
        samples = np.frombuffer(last, dtype="<i2", count=len(last) // 2).astype(np.float64)
        faded = samples * np.linspace(1.0, 0.0, len(samples), dtype=np.float64)
        return bytes(np.rint(faded).astype("<i2").tobytes())

    def silence(self) -> bytes:
        self._last = None
        return bytes(self._frame_bytes)
