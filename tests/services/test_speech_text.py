"""What the LLM writes is cleaned before Piper reads it: no emoji, no markdown, the words kept."""

from __future__ import annotations

import asyncio
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivrbot.services.first_clause import FirstClauseAggregator
from ivrbot.services.speech_text import MARKUP_CHARS, SPOKEN_SYMBOLS, normalize_for_speech, speech_transform

# The classes that reached Piper and were read aloud: pictographs, skin tones, ZWJ families, flags
# (regional indicators), keycaps (digit + VS16 + U+20E3), tag sequences, dingbats and marks.
EMOJI = [
    "😊", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🧑🏿‍💻", "🇰🇷", "🇺🇸", "1️⃣", "#️⃣", "*️⃣", "❤️", "☎️", "✨", "✅", "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "™", "©", "®", "→", "★", "♪", "\U0001FAE8",  # the last is newer than Python's Unicode tables
]
MARKDOWN = [
    "**", "*", "__", "_", "`", "```", "```python\n", "# ", "## ", "### ", "\n- ", "\n* ", "\n+ ", "\n1. ",
    "\n> ", "> ", "~~", "---", "\n---\n", "===", " | ", "\\", "•", "[", "]",
]
PUNCT = [". ", ", ", "! ", "? ", ": ", "; ", "... ", "。", "(", ")"]
SPACE = [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\r\n"]
LETTERS = "abcXYZéß안녕하세요감사합니다ñ"

word = st.text(alphabet=LETTERS + "0123456789", min_size=1, max_size=8)
emoji = st.one_of(st.sampled_from(EMOJI), st.characters(categories=["So", "Sk"]))
token = st.one_of(word, word, emoji, st.sampled_from(MARKDOWN), st.sampled_from(PUNCT), st.sampled_from(SPACE))
#: LLM-like text with every class above, but no links (a link's URL is dropped on purpose)
spoken = st.lists(token, max_size=40).map("".join).filter(lambda s: "](" not in s)

settings.register_profile("speech_text", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("speech_text")


def alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


def assert_speakable(out: str) -> None:
    for ch in out:
        assert ch not in MARKUP_CHARS, (ch, out)
        cat = unicodedata.category(ch)
        assert cat not in ("So", "Sk", "Me", "Cc", "Cs", "Co", "Cn") or ch in SPOKEN_SYMBOLS, (ch, cat, out)
        assert ch not in "\u200d\ufe0f\ufe0e", out
    assert out == out.strip() and "  " not in out and "\n" not in out


@given(spoken)
def test_llm_like_text_keeps_every_letter_and_digit_in_order(text: str) -> None:
    out = normalize_for_speech(text)
    assert alnum(out) == alnum(text)
    assert_speakable(out)


@given(st.one_of(spoken, st.text()))
def test_idempotent_and_never_adds_letters(text: str) -> None:
    out = normalize_for_speech(text)
    assert normalize_for_speech(out) == out
    assert is_subsequence(alnum(out), alnum(text))
    assert_speakable(out)


@given(word, st.text(alphabet="abc/.:?=&-_%0123456789", max_size=30), spoken)
def test_a_link_is_read_as_its_text(label: str, url: str, rest: str) -> None:
    out = normalize_for_speech(f"See [{label}](https://{url}) {rest}")
    assert alnum(out) == alnum("See" + label + rest)


@pytest.mark.parametrize(
    ("text", "spoken_as"),
    [
        ("Sure! 😊 I can help with that.", "Sure! I can help with that."),
        ("**Hello**, _world_! 👨‍👩‍👧", "Hello, world!"),
        ("## Opening hours\n- Monday: 9 to 5\n- Tuesday: closed\n\nAnything else?",
         "Opening hours, Monday: 9 to 5, Tuesday: closed, Anything else?"),
        ("See [our website](https://example.com/a_b?c=1) for details.", "See our website for details."),
        ("Run `make test` 🇰🇷 now 👍🏽.", "Run make test now."),
        ("안녕하세요! 😀 무엇을 도와드릴까요? ✨", "안녕하세요! 무엇을 도와드릴까요?"),
        ("It is 25°C today ™.", "It is 25°C today."),
        ("> quoted\n>> deeper", "quoted, deeper"),
        ("Press 1️⃣ for sales.", "Press 1 for sales."),
        ("~~old~~ new | price", "old new price"),
        ("😊", ""),
        ("", ""),
    ],
)
def test_examples(text: str, spoken_as: str) -> None:
    assert normalize_for_speech(text) == spoken_as


@given(spoken, st.lists(st.integers(0, 400), max_size=12))
def test_streamed_in_any_chunks_through_the_aggregator(text: str, cuts: list[int]) -> None:
    """LLM frames may split a ZWJ sequence or a ``**`` pair; the transform runs after aggregation."""
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]

    async def run() -> list[str]:
        agg = FirstClauseAggregator()
        said = []
        for chunk in chunks:
            async for a in agg.aggregate(chunk):
                said.append(await speech_transform(a.text, a.type))
        last = await agg.flush()
        if last is not None:
            said.append(await speech_transform(last.text, last.type))
        return said

    said = asyncio.run(run())
    for piece in said:
        assert_speakable(piece)
    assert alnum("".join(said)) == alnum(text)
