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
