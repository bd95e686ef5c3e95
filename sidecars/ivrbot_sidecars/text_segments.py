"""Cutting text for Piper into segments of bounded length.

Piper synthesizes a sentence in one pass whose memory and time grow faster than its length: 2 KB
without a full stop took 1.6 GB and 46 s before the first sample, 10 KB exhausted the machine.
Text from an LLM can be exactly that, so no segment handed to Piper is longer than a cap; a long
run is cut where a speaker would pause: after a sentence end, else after a clause mark (, ; : or
a dash), else at a space, else (one enormous "word") hard at the cap.
"""

from __future__ import annotations

import re

# About 10 s of speech. Piper's working memory grows by about 1 MiB per character of one pass
# (en_US-joe-medium: 150 characters +160 MiB, 300 +330 MiB, 1000 +1.3 GB, kept by ONNX Runtime's arena).
DEFAULT_SEGMENT_CHARS = 200

# Cut points, best first; a cut goes right after the match (the whitespace stays with the next segment).
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’)\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:，；：、]+[\"'”’)\]]*(?=\s)|[—–]+|\s-{1,2}(?=\s)|-{2,}")
_SPACE = re.compile(r"\S(?=\s)")
_CUTS = (_SENTENCE_END, _CLAUSE_END, _SPACE)


def _cut(text: str, start: int, cap: int) -> int:
    """End of the segment starting at ``start`` (more than ``cap`` characters remain): the best cut."""
    stop = start + cap
    for pattern in _CUTS:
        # endpos one past the cap: a mark at the cap's last character needs to see the whitespace after it.
        ends = [m.end() for m in pattern.finditer(text, start, stop + 1) if start < m.end() <= stop]
        if ends:
            return ends[-1]
    return stop


def split_segments(text: str, cap: int = DEFAULT_SEGMENT_CHARS) -> list[str]:
    """Cut ``text`` into slices of at most ``cap`` characters whose concatenation is ``text``.

    Segments may start or end with whitespace and may be whitespace only; the caller strips them.
    """
    if cap < 1:
        raise ValueError("cap must be at least 1")
    segments, start = [], 0
    while len(text) - start > cap:
        end = _cut(text, start, cap)
        segments.append(text[start:end])
        start = end
    if start < len(text):
        segments.append(text[start:])
    return segments


# The second bound, on what Piper really synthesizes: text can expand far beyond its length when
# read out ("123456789 " is 10 characters and ~70 phonemes; 200 such characters took +1.2 GB), so a
# sentence's phonemes are cut too. 200 phonemes are about 190 characters of ordinary English.
DEFAULT_PASS_PHONEMES = 200
_PHONEME_PAUSES = frozenset(",;:—–")

# C0 controls (but tab and newlines) and DEL: espeak refuses a NUL and reads none of them.
_CONTROLS = {c: " " for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}


def speakable(text: str) -> str:
    """``text`` with control characters (never spoken, and a NUL fails the whole pass) as spaces."""
    return text.translate(_CONTROLS)


def split_phonemes(phonemes: list[str], cap: int = DEFAULT_PASS_PHONEMES) -> list[list[str]]:
    """Cut one sentence's phonemes into runs of at most ``cap`` whose concatenation is the sentence.

    A run ends after the last word break (a space phoneme) that follows a pause mark, else after
    the last word break, else hard at the cap.
    """
    if cap < 1:
        raise ValueError("cap must be at least 1")
    parts, start = [], 0
    while len(phonemes) - start > cap:
        stop = start + cap
        breaks = [i + 1 for i in range(start, stop) if phonemes[i] == " "]
        pauses = [i for i in breaks if i - 2 >= start and phonemes[i - 2] in _PHONEME_PAUSES]
        end = (pauses or breaks or [stop])[-1]
        parts.append(phonemes[start:end])
        start = end
    if start < len(phonemes):
        parts.append(phonemes[start:])
    return parts
