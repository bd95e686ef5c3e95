"""What both speech servers check on client text before it goes anywhere else."""

from __future__ import annotations


def is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate: JSON lets ``\\ud800`` through, but UTF-8 (the
    wire, Kaldi's input, Piper's phonemizer) cannot carry it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
