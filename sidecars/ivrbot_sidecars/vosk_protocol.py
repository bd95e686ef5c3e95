"""The vosk-server protocol's sans-IO core: what a client message means, decided without sockets or a
recognizer (the server in ``vosk_server.py`` feeds it frames; tests and fuzzers drive it directly)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ivrbot_sidecars.wire import is_unicode

EOF_MESSAGE = '{"eof" : 1}'
RESET_MESSAGE = '{"reset" : 1}'


@dataclass(frozen=True)
class RecognizerConfig:
    """Per-session settings; the defaults match upstream's environment defaults."""

    sample_rate: float = 8000.0
    words: bool = True
    max_alternatives: int = 0
    phrase_list: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ConfigMessage:
    config: RecognizerConfig


@dataclass(frozen=True)
class AudioMessage:
    pcm: bytes


@dataclass(frozen=True)
class EndMessage:
    """``{"eof" : 1}`` (close after the final) or ``{"reset" : 1}`` (keep the session)."""

    close: bool


@dataclass(frozen=True)
class BadMessage:
    reason: str


ClientMessage = ConfigMessage | AudioMessage | EndMessage | BadMessage


MIN_RATE, MAX_RATE = 8000, 48000
MAX_ALTERNATIVES = 100
MAX_PHRASES, MAX_PHRASE_CHARS = 10000, 1000


def _sample_rate(value: Any) -> int | str:
    """A whole number of Hz in MIN_RATE..MAX_RATE, or why not.

    Kaldi's resampler aborts the whole process on a fractional rate (7999.5), so only whole numbers
    pass: an int, a float without a fraction (16000.0) or, as upstream's ``float(...)`` accepts, a
    string of ASCII digits ("16000").
    """
    rate: int | None = None
    if isinstance(value, bool):
        rate = None
    elif isinstance(value, int):
        rate = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        rate = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        rate = int(value)
    if rate is None:
        return f"config.sample_rate must be a whole number of Hz, {MIN_RATE}..{MAX_RATE}"
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"config.sample_rate must be between {MIN_RATE} and {MAX_RATE} Hz"
    return rate


def apply_config(base: RecognizerConfig, obj: Any) -> RecognizerConfig | str:
    """Merge a ``config`` object into ``base``; a string return is why it was refused.

    Every value is checked here because what reaches Kaldi unchecked can abort the process, and with
    it every other session. Unknown keys are ignored, as upstream does.
    """
    if not isinstance(obj, dict):
        return "config must be a JSON object"
    sample_rate, words, max_alt, phrases = base.sample_rate, base.words, base.max_alternatives, base.phrase_list
    if "sample_rate" in obj:
        sr = _sample_rate(obj["sample_rate"])
        if isinstance(sr, str):
            return sr
        sample_rate = float(sr)
    if "words" in obj:
        w = obj["words"]
        if not (isinstance(w, bool) or (isinstance(w, int) and w in (0, 1))):
            return "config.words must be 0, 1 or a boolean"
        words = bool(w)
    if "max_alternatives" in obj:
        ma = obj["max_alternatives"]
        if isinstance(ma, bool) or not isinstance(ma, int) or not 0 <= ma <= MAX_ALTERNATIVES:
            return f"config.max_alternatives must be an integer 0..{MAX_ALTERNATIVES}"
        max_alt = ma
    if "phrase_list" in obj:
        pl = obj["phrase_list"]
        if pl is None:
            phrases = None
        elif not isinstance(pl, list) or not all(isinstance(p, str) for p in pl):
            return "config.phrase_list must be a list of strings"
        elif len(pl) > MAX_PHRASES or any(len(p) > MAX_PHRASE_CHARS for p in pl):
            return f"config.phrase_list may hold {MAX_PHRASES} phrases of up to {MAX_PHRASE_CHARS} characters"
        elif not all(is_unicode(p) for p in pl):
            return "config.phrase_list holds a string that is not valid Unicode (a lone surrogate escape)"
        else:
            phrases = tuple(pl) or None
    return RecognizerConfig(sample_rate, words, max_alt, phrases)


def parse_message(message: str | bytes, current: RecognizerConfig) -> ClientMessage:
    """Classify one frame. Upstream compares eof/reset as exact strings; JSON-equal variants are accepted."""
    if isinstance(message, bytes):
        # Some upstream versions compared eof/reset as bytes; 11 or 13 bytes are no useful audio anyway.
        if message in (EOF_MESSAGE.encode(), RESET_MESSAGE.encode()):
            return EndMessage(close=message == EOF_MESSAGE.encode())
        return AudioMessage(message)
    if message == EOF_MESSAGE:
        return EndMessage(close=True)
    if message == RESET_MESSAGE:
        return EndMessage(close=False)
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        return BadMessage("text frame is not JSON; send audio as binary frames")
    if not isinstance(obj, dict):
        return BadMessage("text frame must be a JSON object")
    if "config" in obj:
        merged = apply_config(current, obj["config"])
        return BadMessage(merged) if isinstance(merged, str) else ConfigMessage(merged)
    if obj == {"eof": 1}:
        return EndMessage(close=True)
    if obj == {"reset": 1}:
        return EndMessage(close=False)
    return BadMessage('unknown text frame; expected {"config": ...}, {"eof" : 1} or {"reset" : 1}')


def error_reply(reason: str) -> str:
    return json.dumps({"error": reason})


