"""Text aggregation that lets the first words of a reply reach Piper before the sentence ends.

Pipecat releases LLM text to the TTS a whole sentence at a time. With a small model that writes one
long first sentence (or Korean without punctuation) the caller waits for all of it: measured here,
LLM->TTS medians of 1.1 s and a 9.8 s tail. The first chunk of each reply is instead released at the
first clause break (`,;:`), at a word boundary once it is long enough, or at a word boundary once
the model has been writing it for ``first_chunk_secs``: characters are not a measure of time (a
Korean syllable is one or two SSE chunks of ~35 ms, so 40 characters took over a second, the LLM->TTS
tail measured on 2026-12-04), and under CPU contention even English comes at 5-12 tokens a second.
The rest of the reply is aggregated by sentence as before, synthesized while the first chunk plays.

Text without spaces has no word boundary to wait for: Chinese or Japanese, and the degenerate output
a small model writes now and then (``B.S.A.B.B.A.B.A.A.A...``, sixty tokens without a space, held
its call's first audio 2.9 s at three calls on 2026-12-04). There a full-width clause break
(``，；：、``) ends the first chunk at once, and ``max_chars`` characters without whitespace end it
at the character that reaches them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator, _LookaheadState

CLAUSE_BREAKS = frozenset(",;:")
#: clause breaks of scripts written without spaces: no whitespace follows them to cut at
FULL_WIDTH_BREAKS = frozenset("，；：、")


class FirstClauseAggregator(SimpleTextAggregator):
    """Sentence aggregation, except for an early cut of each reply's first chunk."""

    def __init__(
        self,
        *,
        min_words: int = 4,
        max_chars: int = 40,
        first_chunk_secs: float = 0.15,
        timed_min_words: int = 2,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        #: a cut at a word boundary (no clause break yet) needs this many words and max_chars characters
        self.min_words = min_words
        self.max_chars = max_chars
        #: ... or this long since the reply's first character, and timed_min_words words
        self.first_chunk_secs = first_chunk_secs
        self.timed_min_words = timed_min_words
        self._clock = clock
        self._first_pending = True
        self._first_text_at: float | None = None

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self._aggregation_type == TextType.TOKEN:
            async for agg in super().aggregate(text):
                yield agg
            return
        for char in text:
            if self._first_pending and self._first_text_at is None and not char.isspace():
                self._first_text_at = self._clock()
            self._text += char
            result = await self._check_sentence_with_lookahead(char)
            if result is None and self._first_pending:
                result = self._early_cut(char)
            if result is not None:
                self._first_pending = False
                self._first_text_at = None
                yield result

    def _early_cut(self, char: str) -> Aggregation | None:
        if not char.isspace():
            return self._unspaced_cut(char)
        head = self._text.strip()
        if not head:
            return None
        words = len(head.split())
        started = self._first_text_at
        if (
            head[-1] in CLAUSE_BREAKS
            or (len(head) >= self.max_chars and words >= self.min_words)
            or (
                started is not None
                and words >= self.timed_min_words
                and self._clock() - started >= self.first_chunk_secs
            )
        ):
            return self._cut(head)
        return None

    def _unspaced_cut(self, char: str) -> Aggregation | None:
        head = self._text.strip()
        if char in FULL_WIDTH_BREAKS and len(head) > 1:
            return self._cut(head)
        if len(head) >= self.max_chars and len(head.split()[-1]) >= self.max_chars:
            return self._cut(head)  # max_chars since the last whitespace, if there was any
        return None

    def _cut(self, head: str) -> Aggregation:
        self._text = ""
        self._lookahead_state = _LookaheadState.IDLE
        return Aggregation(text=head, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        self._first_pending = True  # the next reply starts again with an early first chunk
        self._first_text_at = None
        return await super().flush()

    async def handle_interruption(self) -> None:
        self._first_pending = True
        self._first_text_at = None
        await super().handle_interruption()  # type: ignore[no-untyped-call]
