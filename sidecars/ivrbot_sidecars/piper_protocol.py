"""The Piper server's protocol core, without I/O: client messages, ids, sentence accumulation.

piper_server.py (the asyncio shell) says what the protocol is and why; this module holds the rules
it applies to each message and each piece of text, so they are tested without a socket or a voice.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from ivrbot_sidecars.text_segments import (
    DEFAULT_SEGMENT_CHARS,
    split_segments,
)
from ivrbot_sidecars.wire import is_unicode

UttId = str | int
EndReason = Literal["done", "cancelled", "error"]

MAX_MESSAGE = 2**20  # bytes in one client frame; as many characters may wait per utterance


@dataclass(frozen=True)
class Speak:
    id: UttId
    text: str
    flush: bool = True


@dataclass(frozen=True)
class Cancel:
    id: UttId


@dataclass(frozen=True)
class BadMessage:
    reason: str
    id: UttId | None = None


ClientMessage = Speak | Cancel | BadMessage


MAX_ID_CHARS = 256
MAX_ID_INT = 2**53 - 1  # the integers every JSON client can represent exactly


def _id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be an utterance id (it is echoed in every reply), or None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "'id' must be a string or an integer"
    if isinstance(value, int):
        return None if -MAX_ID_INT <= value <= MAX_ID_INT else f"'id' must be an integer within +-{MAX_ID_INT}"
    if len(value) > MAX_ID_CHARS:
        return f"'id' must be at most {MAX_ID_CHARS} characters"
    return None if is_unicode(value) else "'id' is not valid Unicode (a lone surrogate escape)"


def _valid_id(value: Any) -> TypeGuard[UttId]:
    return _id_problem(value) is None


def _show(value: Any) -> str:
    """A client value for an error message: escaped (no lone surrogate reaches the wire) and short."""
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_message(message: str | bytes) -> ClientMessage:
    """Classify one client frame; anything unusable becomes a BadMessage with a reason for the client."""
    if isinstance(message, bytes):
        return BadMessage("binary frames are not accepted; send JSON text messages")
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        return BadMessage("message is not JSON")
    if not isinstance(obj, dict):
        return BadMessage("message must be a JSON object")
    kind, uid = obj.get("type"), obj.get("id")
    if kind not in ("speak", "cancel"):
        return BadMessage(f"unknown message type {_show(kind)}; expected 'speak' or 'cancel'")
    if not _valid_id(uid):
        return BadMessage(f"{kind}: {_id_problem(uid)}")
    if kind == "cancel":
        return Cancel(uid)
    text, flush = obj.get("text"), obj.get("flush", True)
    if not isinstance(text, str):
        return BadMessage("speak: 'text' must be a string", uid)
    if not is_unicode(text):
        return BadMessage("speak: 'text' is not valid Unicode (a lone surrogate escape)", uid)
    if not isinstance(flush, bool):
        return BadMessage("speak: 'flush' must be a boolean", uid)
    return Speak(uid, text, flush)


# A sentence ends at . ! ? ; (or their CJK forms), optional closing quotes/brackets, then whitespace;
# a newline always ends one.
_SENTENCE_END = re.compile(r"[.!?;。！？]+[\"'”’)\]]*\s+|\n\s*")


def split_complete(buffer: str) -> tuple[str, str]:
    """``buffer`` -> (text up to the last complete sentence, the unfinished tail)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(buffer)]
    if not ends:
        return "", buffer
    return buffer[: ends[-1]], buffer[ends[-1] :]


#: Piper starts every pass with 25-35 ms below this peak (en_US-joe-medium, measured); the first
#: audible block is kept whole, with one block of the quiet before it
LEAD_PEAK = 64
LEAD_BLOCK_MS = 5


def trim_leading_silence(pcm: bytes, sample_rate: int, peak: int = LEAD_PEAK, block_ms: int = LEAD_BLOCK_MS) -> bytes:
    """The s16le ``pcm`` from one block before its first block that peaks at ``peak`` or more.

    Applied to an utterance's first audio only, where the quiet is pure delay before the caller
    hears anything; between sentences it is the pause the voice makes. All-quiet audio is returned
    unchanged rather than dropped.
    """
    block = max(1, sample_rate * block_ms // 1000) * 2
    for start in range(0, len(pcm) - len(pcm) % 2, block):
        samples = memoryview(pcm[start : start + block]).cast("h")
        if max(samples) >= peak or -min(samples) >= peak:
            return pcm[max(0, start - block) :]
    return pcm


def pcm_frames(pcm: bytes, frame_bytes: int) -> Iterator[bytes]:
    """Cut a sentence's audio into frames of at most ``frame_bytes`` (an even number)."""
    for i in range(0, len(pcm), frame_bytes):
        yield pcm[i : i + frame_bytes]


@dataclass(eq=False)
class Utterance:
    """One id's text: segments ready to synthesize (None = flushed) and whether it was cancelled.

    No segment is longer than ``segment_chars`` (text_segments says why); an unflushed tail that
    grows past it is cut and queued at once, so text without any sentence end still starts audio
    after one segment and the tail stays bounded.
    """

    id: UttId
    segment_chars: int = DEFAULT_SEGMENT_CHARS
    segments: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    tail: str = ""
    queued: int = 0  # characters in ``segments``
    flushed: bool = False
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pending(self) -> int:
        """Characters received and not yet handed to Piper."""
        return self.queued + len(self.tail)

    def add(self, text: str, flush: bool) -> None:
        complete, self.tail = split_complete(self.tail + text)
        for piece in split_segments(complete, self.segment_chars):
            self._queue(piece)
        if len(self.tail) > self.segment_chars:
            *ready, self.tail = split_segments(self.tail, self.segment_chars)
            for piece in ready:
                self._queue(piece)
        if flush:
            self._queue(self.tail)
            self.tail = ""
            self.flushed = True
            self.segments.put_nowait(None)

    def _queue(self, piece: str) -> None:
        if piece.strip():
            self.segments.put_nowait(piece)
            self.queued += len(piece)

    def taken(self, segment: str) -> None:
        """``segment`` left the queue for synthesis."""
        self.queued -= len(segment)
