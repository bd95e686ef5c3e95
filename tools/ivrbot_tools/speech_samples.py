"""Synthetic caller speech for tests, the demo and the benchmark: espeak-ng through sox.

Korean is the default because the only Vosk model that installs from the package index is Korean;
espeak's Korean is only partly recognized by it, so callers of this must assert on robust things
(non-empty transcript, syllable overlap), never on exact words.
"""

from __future__ import annotations

import functools
import shutil
import subprocess


class SpeechToolMissing(RuntimeError):
    """espeak-ng or sox is not installed (Debian: apt-get install espeak-ng sox)."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SpeechToolMissing(f"{name} not found on PATH; install it (Debian: apt-get install espeak-ng sox)")
    return path


@functools.lru_cache(maxsize=64)
def caller_speech(text: str, *, voice: str = "ko", sample_rate: int = 16000, speed: int = 175) -> bytes:
    """``text`` spoken by espeak-ng ``voice`` as raw s16le mono PCM at ``sample_rate`` (cached)."""
    espeak, sox = _tool("espeak-ng"), _tool("sox")
    wav = subprocess.run(
        [espeak, "-v", voice, "-s", str(speed), "--stdout", text],
        check=True, capture_output=True, timeout=60,
    ).stdout
    if not wav:
        raise RuntimeError(f"espeak-ng produced no audio for voice {voice!r}")
    return subprocess.run(
        [sox, "-q", "-t", "wav", "-", "-t", "raw", "-r", str(sample_rate), "-e", "signed-integer",
         "-b", "16", "-c", "1", "-L", "-"],
        input=wav, check=True, capture_output=True, timeout=60,
    ).stdout


def silence(seconds: float, *, sample_rate: int = 16000) -> bytes:
    """Digital silence as s16le mono PCM."""
    return bytes(2 * round(seconds * sample_rate))
