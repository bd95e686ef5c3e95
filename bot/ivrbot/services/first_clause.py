"""Text aggregation that lets the first words of a reply reach Piper before the sentence ends.

Pipecat releases LLM text to the TTS a whole sentence at a time. With a small model that writes one
long first sentence (or Korean without punctuation) the caller waits for all of it: measured here,
LLM->TTS medians of 1.1 s and a 9.8 s tail. The first chunk of each reply is instead released at the
first clause break (`,;:`) once it has a few words, or at a word boundary once it is long enough;
the rest of the reply is aggregated by sentence as before, synthesized while the first chunk plays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator, _LookaheadState

CLAUSE_BREAKS = frozenset(",;:")


class FirstClauseAggregator(SimpleTextAggregator):
    """Sentence aggregation, except for an early cut of each reply's first chunk."""

    def __init__(self, *, min_words: int = 4, max_chars: int = 40, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        #: a cut at a word boundary (no clause break yet) needs this many words and max_chars characters
        self.min_words = min_words
        self.max_chars = max_chars
        self._first_pending = True

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self._aggregation_type == TextType.TOKEN:
            async for agg in super().aggregate(text):
                yield agg
            return
        for char in text:
            self._text += char
            result = await self._check_sentence_with_lookahead(char)
            if result is None and self._first_pending:
                result = self._early_cut(char)
            if result is not None:
                self._first_pending = False
                yield result

    def _early_cut(self, char: str) -> Aggregation | None:
        if not char.isspace():
            return None
        head = self._text.strip()
        if not head:
            return None
        if head[-1] in CLAUSE_BREAKS or (len(head) >= self.max_chars and len(head.split()) >= self.min_words):
            self._text = ""
            self._lookahead_state = _LookaheadState.IDLE
            return Aggregation(text=head, type=TextType.SENTENCE)
        return None

    async def flush(self) -> Aggregation | None:
        self._first_pending = True  # the next reply starts again with an early first chunk
        return await super().flush()

    async def handle_interruption(self) -> None:
        self._first_pending = True
        await super().handle_interruption()  # type: ignore[no-untyped-call]
