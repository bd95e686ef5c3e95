"""What the LLM writes, made fit to be read aloud: no emoji, no markdown, words and punctuation kept.

Piper reads every character it is given: an emoji becomes "smiling face with smiling eyes", ``**``
or ``#`` become "asterisk" or "number sign", a link is read out as its URL. The normalizer runs on
each aggregated clause or sentence just before it is sent to Piper (a Pipecat TTS text transform), so a
markdown token or a multi-codepoint emoji sequence split across streamed LLM frames has been joined
again by then. It never needs a marker's partner: every marker character is dropped on its own, so
a pair the aggregator cut in two (``**bold,`` | ``text**``) is cleaned in both halves. Letters and
digits of any script are kept in order (replies can be Korean); it adds none.
"""

from __future__ import annotations

import re
import unicodedata

from pipecat.utils.text.base_text_aggregator import TextType

#: markdown and markup characters that are never spoken (emphasis, headers, code, links, tables, escapes)
MARKUP_CHARS = frozenset("*_`#[]|~\\•")

#: symbol characters (Unicode So) that are read as what they mean, not spelled out as a name
SPOKEN_SYMBOLS = frozenset("°")

#: general categories dropped entirely: other symbols (emoji, pictographs, dingbats), modifier
#: symbols (skin tones, ``^``, backtick), enclosing marks (keycap), controls, surrogates, private
#: use and unassigned code points (emoji newer than Python's Unicode tables are unassigned here)
_DROPPED_CATEGORIES = frozenset({"So", "Sk", "Me", "Cc", "Cs", "Co", "Cn"})

#: emoji sequence glue: zero-width joiner, variation selectors, tag characters
_EMOJI_GLUE = frozenset(
    [0x200D, *range(0xFE00, 0xFE10), *range(0xE0020, 0xE0080), *range(0xE0100, 0xE01F0)]
)

# [text](url) and ![alt](url) -> text; a link tail the aggregator cut off from its text -> nothing
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_LINK_TAIL = re.compile(r"\]\([^)\s]*\)?")
# line-start markers left after the markup characters are gone: blockquote, ``-`` and ``+`` bullets
# (a numbered marker keeps its number)
_LINE_MARKER = re.compile(r"(?:[-+](?:\s+|$)|>+\s*)*")
# rules and setext underlines (---, ===, ***)
_RULE = re.compile(r"[-=]{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:)}。、！？…])")
_SPACE_AFTER_OPEN = re.compile(r"([({])\s+")

_CLAUSE_END = frozenset(".,!?;:。、！？…")


def _drop(ch: str) -> bool:
    if ch in MARKUP_CHARS:
        return True
    if ord(ch) in _EMOJI_GLUE:
        return True
    return unicodedata.category(ch) in _DROPPED_CATEGORIES and ch not in SPOKEN_SYMBOLS


def _clean_line(line: str) -> str:
    line = _LINK.sub(r" \1 ", line)
    line = _LINK_TAIL.sub(" ", line)
    line = _RULE.sub(" ", line)
    line = " ".join("".join(" " if _drop(ch) else ch for ch in line).split())
    return line[_LINE_MARKER.match(line).end() :]  # type: ignore[union-attr]


def _tidy(text: str) -> str:
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return _SPACE_AFTER_OPEN.sub(r"\1", text)


def normalize_for_speech(text: str) -> str:
    """``text`` as Piper should read it: one line, no emoji or markdown, words and punctuation kept.

    Line breaks (lists, paragraphs) become a pause: a comma where the line did not end a clause.
    Idempotent; the result's letters and digits are the input's, in order (a link keeps its text
    and loses its URL).
    """
    out = ""
    for line in (_clean_line(raw) for raw in text.splitlines()):
        if not line:
            continue
        if out:
            out += " " if out[-1] in _CLAUSE_END or line[0] in _CLAUSE_END else ", "
        out += line
    return _tidy(out)


async def speech_transform(text: str, text_type: str | TextType) -> str:
    """``normalize_for_speech`` as a TTS text transform: Piper gets the clean text, the context the LLM's."""
    return normalize_for_speech(text)
