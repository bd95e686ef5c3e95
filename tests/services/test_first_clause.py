"""The first chunk of a reply reaches Piper before the end of its sentence (unit test of one class)."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from ivrbot.assistant_settings import AssistantSettings
from ivrbot.services.first_clause import FirstClauseAggregator


class Clock:
    """A clock the test moves; the aggregator's time rule must not depend on how fast a test runs."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frozen() -> FirstClauseAggregator:
    return FirstClauseAggregator(clock=Clock())


async def feed(agg: FirstClauseAggregator, text: str) -> list[str]:
    out: list[str] = []
    for word in text.split(" "):
        async for chunk in agg.aggregate(word + " "):
            out.append(chunk.text)
    last = await agg.flush()
    if last is not None and last.text:
        out.append(last.text)
    return out


async def test_first_chunk_released_at_first_clause_break() -> None:
    chunks = await feed(frozen(), "Sure, our shop opens at nine. We close at six.")
    assert chunks == ["Sure,", "our shop opens at nine.", "We close at six."]


async def test_long_first_sentence_is_cut_at_a_word_boundary() -> None:
    text = "Our opening hours are from nine in the morning until six in the evening on weekdays."
    chunks = await feed(FirstClauseAggregator(max_chars=40, clock=Clock()), text)
    assert len(chunks) == 2
    assert " ".join(chunks) == text
    assert 40 <= len(chunks[0]) < len(text)


async def test_only_the_first_chunk_of_each_reply_is_cut_early() -> None:
    agg = frozen()
    first = await feed(agg, "Yes, we do, and we deliver too, every day.")
    assert first == ["Yes,", "we do, and we deliver too, every day."]
    second = await feed(agg, "Well, that depends.")  # flush() ended the first reply
    assert second == ["Well,", "that depends."]


async def test_interruption_resets_the_early_cut() -> None:
    agg = frozen()
    async for _ in agg.aggregate("Hello, I am "):
        pass
    await agg.handle_interruption()
    assert await feed(agg, "Okay, go ahead.") == ["Okay,", "go ahead."]


async def test_the_bots_default_sends_the_first_two_words_at_once() -> None:
    """Piper's synthesis time follows the chunk's length, and llama-server writing the rest of the
    reply competes with it: two words are the first audio soonest (docs/benchmarks.md, 2026-12-04)."""
    agg = FirstClauseAggregator(clock=Clock(), first_chunk_secs=AssistantSettings().tts_first_chunk_secs)
    chunks = await feed(agg, "I can help you with that today. What is your name?")
    assert chunks == ["I can", "help you with that today.", "What is your name?"]
    assert await feed(agg, "Sure, tell me more.") == ["Sure,", "tell me more."]  # a clause break still wins


async def test_slow_first_words_are_cut_by_time_not_by_characters() -> None:
    """A Korean reply (the small model echoing the caller) arrives at ~35 ms a syllable and has no
    punctuation: waiting for 40 characters held the first audio back for over a second."""
    clock = Clock()
    agg = FirstClauseAggregator(clock=clock, first_chunk_secs=0.15)
    out: list[str] = []
    for syllable in "염파 매료 영역 들이 겁 아래 놓인 영역 들이 겁 아래 놓인":
        clock.now += 0.035
        async for chunk in agg.aggregate(syllable):
            out.append(chunk.text)
    last = await agg.flush()
    assert last is not None
    assert out == ["염파 매료"]  # 2 words, 5 syllables after the first: 0.175 s
    assert last.text == "영역 들이 겁 아래 놓인 영역 들이 겁 아래 놓인"


async def test_one_slow_word_is_not_cut_alone() -> None:
    clock = Clock()
    agg = FirstClauseAggregator(clock=clock, first_chunk_secs=0.15)
    out: list[str] = []
    for piece in ["Unfortunately ", "our ", "shop ", "is ", "closed."]:
        async for chunk in agg.aggregate(piece):
            out.append(chunk.text)
        clock.now += 0.5
    assert out == ["Unfortunately our"]


async def test_a_fast_reply_is_cut_as_before() -> None:
    """English at full speed reaches its clause break long before the time rule."""
    clock = Clock()
    agg = FirstClauseAggregator(clock=clock, first_chunk_secs=0.15)
    out: list[str] = []
    for token in ["I'm", " sorry", " for", " any", " misunderstanding", ",", " but", " I", " can", " help", "."]:
        clock.now += 0.014
        async for chunk in agg.aggregate(token):
            out.append(chunk.text)
    last = await agg.flush()
    assert out == ["I'm sorry for any misunderstanding,"]
    assert last is not None and last.text == "but I can help."


words = st.text(alphabet=st.sampled_from("abc가나다,."), min_size=1, max_size=6)


@given(
    st.lists(words, min_size=1, max_size=14),
    st.lists(st.floats(0, 0.2), min_size=1, max_size=14),
    st.floats(0.05, 0.5),
)
def test_first_chunk_never_waits_past_the_time_rule(ws: list[str], gaps: list[float], limit: float) -> None:
    """Whatever the text and the pace: nothing is lost or reordered, and the first chunk is out no
    later than the first word boundary where two words have taken ``limit`` seconds."""
    clock = Clock()
    agg = FirstClauseAggregator(clock=clock, first_chunk_secs=limit)
    tokens = [w + " " for w in ws]

    async def run() -> tuple[list[str], int | None]:
        out: list[str] = []
        first_at: int | None = None
        for i, token in enumerate(tokens):
            clock.now += gaps[i % len(gaps)]
            async for chunk in agg.aggregate(token):
                out.append(chunk.text)
                if first_at is None:
                    first_at = i
        last = await agg.flush()
        if last is not None and last.text:
            out.append(last.text)
        return out, first_at

    out, first_at = asyncio.run(run())
    assert "".join("".join(out).split()) == "".join("".join(tokens).split())  # Pipecat may re-space at "."
    # the clock's readings, added up the way the run moved it (a sum in another order can round
    # differently and put a reading a hair either side of the limit)
    now, readings = 100.0, []
    for i in range(len(tokens)):
        now += gaps[i % len(gaps)]
        readings.append(now)
    due = None
    for i in range(1, len(tokens)):
        if readings[i] - readings[0] >= limit:
            due = i
            break
    if due is not None:
        assert first_at is not None and first_at <= due


async def test_a_reply_without_spaces_is_cut_after_max_chars() -> None:
    """A degenerate reply of one 60-token 'word' held its call's first audio for 2.9 s (2026-12-04)."""
    agg = FirstClauseAggregator(max_chars=40, clock=Clock())
    garbage = "B.S.A.B.B.A.B." + "A." * 40
    out: list[str] = []
    for i in range(0, len(garbage), 2):  # two characters a token, as llama-server streamed it
        async for chunk in agg.aggregate(garbage[i:i + 2]):
            out.append(chunk.text)
    assert out and len(out[0]) in (40, 41)
    last = await agg.flush()
    assert "".join(out) + (last.text if last is not None else "") == garbage


async def test_a_full_width_clause_break_ends_the_first_chunk_without_a_space() -> None:
    agg = frozen()
    out = [chunk.text async for chunk in agg.aggregate("您好，请问有什么可以帮您的吗？")]
    assert out[:1] == ["您好，"]


@given(st.text(alphabet=st.sampled_from("ab가。，.,! "), min_size=1, max_size=120), st.integers(1, 5))
def test_no_first_chunk_holds_max_chars_without_a_break(text: str, step: int) -> None:
    """Any text, streamed in any token size: nothing lost, and the first chunk never runs more than
    max_chars characters past its last whitespace or break."""
    agg = FirstClauseAggregator(max_chars=10, clock=Clock())

    async def run() -> list[str]:
        out: list[str] = []
        for i in range(0, len(text), step):
            async for chunk in agg.aggregate(text[i:i + step]):
                out.append(chunk.text)
        last = await agg.flush()
        if last is not None and last.text:
            out.append(last.text)
        return out

    out = asyncio.run(run())
    assert "".join("".join(out).split()) == "".join(text.split())
    first = out[0] if out else ""
    for run_of_chars in first.replace("，", " ").split():
        assert len(run_of_chars) <= 10  # the cut comes at the character that reaches the cap
