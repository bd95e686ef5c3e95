"""The first chunk of a reply reaches Piper before the end of its sentence (unit test of one class)."""

from __future__ import annotations

from ivrbot.services.first_clause import FirstClauseAggregator


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
    chunks = await feed(FirstClauseAggregator(), "Sure, our shop opens at nine. We close at six.")
    assert chunks == ["Sure,", "our shop opens at nine.", "We close at six."]


async def test_long_first_sentence_is_cut_at_a_word_boundary() -> None:
    text = "Our opening hours are from nine in the morning until six in the evening on weekdays."
    chunks = await feed(FirstClauseAggregator(max_chars=40), text)
    assert len(chunks) == 2
    assert " ".join(chunks) == text
    assert 40 <= len(chunks[0]) < len(text)


async def test_only_the_first_chunk_of_each_reply_is_cut_early() -> None:
    agg = FirstClauseAggregator()
    first = await feed(agg, "Yes, we do, and we deliver too, every day.")
    assert first == ["Yes,", "we do, and we deliver too, every day."]
    second = await feed(agg, "Well, that depends.")  # flush() ended the first reply
    assert second == ["Well,", "that depends."]


async def test_interruption_resets_the_early_cut() -> None:
    agg = FirstClauseAggregator()
    async for _ in agg.aggregate("Hello, I am "):
        pass
    await agg.handle_interruption()
    assert await feed(agg, "Okay, go ahead.") == ["Okay,", "go ahead."]
