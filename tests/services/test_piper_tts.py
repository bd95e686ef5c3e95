"""PiperTTSService against the project's real Piper WebSocket server (en_US-joe-medium)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from harness import Harness
from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from sidecar_procs import SidecarProcess, free_port, piper_process

from ivrbot.services.piper_tts import PiperTTSService

pytestmark = pytest.mark.slow

LONG_REPLY = [
    "Sure, I can help with that. ",
    "Your appointment is on Monday at ten in the morning. ",
    "Please bring your insurance card and a photo identification. ",
    "If you need to reschedule, call us at least one day before. ",
    "We also send a reminder message the evening before your visit. ",
    "Is there anything else I can help you with today?",
]


def audio(h: Harness) -> list[TTSAudioRawFrame]:
    return h.down.of(TTSAudioRawFrame)


def audio_bytes(h: Harness) -> int:
    return sum(len(f.audio) for f in audio(h))


async def test_speaks_at_22050(piper: SidecarProcess) -> None:
    tts = PiperTTSService(url=f"ws://127.0.0.1:{piper.port}")
    async with Harness(tts) as h:
        await h.send(TTSSpeakFrame("Hello, thank you for calling."))
        assert await h.wait_for(lambda: bool(h.down.of(TTSStoppedFrame)))
        frames = audio(h)
        assert frames and {f.sample_rate for f in frames} == {22050}
        pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype="<i2").astype(np.float64)
        assert pcm.size > 22050 // 2  # more than half a second of speech
        assert float(np.sqrt(np.mean(pcm * pcm))) > 300  # not silence


async def test_streamed_llm_text_is_spoken_sentence_by_sentence(piper: SidecarProcess) -> None:
    tts = PiperTTSService(url=f"ws://127.0.0.1:{piper.port}")
    async with Harness(tts) as h:
        await h.send(LLMFullResponseStartFrame())
        await h.send(*(LLMTextFrame(w + " ") for w in "Hello there. How are you today?".split()))
        # The first sentence is synthesised before the reply has ended.
        assert await h.wait_for(lambda: bool(audio(h)))
        assert not h.down.of(LLMFullResponseEndFrame)
        await h.send(LLMFullResponseEndFrame())
        assert await h.wait_for(lambda: len(h.down.of(TTSStoppedFrame)) >= 2)
        contexts = {f.context_id for f in audio(h)}
        assert len(contexts) == 2, "one Piper utterance per sentence"


async def test_interruption_cancels_on_the_server_and_drops_late_audio(piper: SidecarProcess) -> None:
    tts = PiperTTSService(url=f"ws://127.0.0.1:{piper.port}")
    async with Harness(tts) as h:
        await h.send(LLMFullResponseStartFrame(), *(LLMTextFrame(s) for s in LONG_REPLY), LLMFullResponseEndFrame())
        full = await h.settle(lambda: audio_bytes(h), quiet=1.5)
    assert full > 22050 * 2 * 5  # the whole reply is several seconds long

    tts = PiperTTSService(url=f"ws://127.0.0.1:{piper.port}")
    async with Harness(tts) as h:
        await h.send(LLMFullResponseStartFrame(), *(LLMTextFrame(s) for s in LONG_REPLY), LLMFullResponseEndFrame())
        assert await h.wait_for(lambda: bool(audio(h)))
        await h.send(InterruptionFrame())
        cut = await h.settle(lambda: audio_bytes(h), quiet=1.5)
        assert tts.cancels_sent >= 1
        # Nothing queued keeps coming: audio stops well short of the whole reply.
        assert cut < full // 2
        # The service is usable for the next turn.
        before = len(audio(h))
        await h.send(TTSSpeakFrame("Yes?"))
        assert await h.wait_for(lambda: len(audio(h)) > before)


async def test_server_down_then_back(sidecar_logs: Path) -> None:
    port = free_port()
    tts = PiperTTSService(url=f"ws://127.0.0.1:{port}")
    async with Harness(tts) as h:
        await h.send(TTSSpeakFrame("Is anybody there?"))
        assert await h.wait_for(lambda: bool(h.up.of(ErrorFrame)))
        assert tts.is_usable and not tts.connected
        server = piper_process(sidecar_logs, port)
        await server.astart()
        try:
            await h.send(TTSSpeakFrame("Now I can speak."))
            assert await h.wait_for(lambda: bool(audio(h)))
            errors = len(h.up.of(ErrorFrame))
            await server.astop()
            # The drop is noticed and reported; the next sentence fails fast and the call goes on.
            assert await h.wait_for(lambda: len(h.up.of(ErrorFrame)) > errors)
            assert tts.is_usable
        finally:
            server.stop()


async def test_emoji_and_markdown_are_not_read_aloud(piper: SidecarProcess) -> None:
    """An LLM reply decorated with emoji and markdown, split mid-sequence across frames, is spoken as its words."""
    import unicodedata

    from ivrbot.services.speech_text import MARKUP_CHARS

    async def speak(parts: list[str]) -> tuple[list[str], int]:
        tts = PiperTTSService(url=f"ws://127.0.0.1:{piper.port}")
        sent: list[str] = []

        async def request(service: object, context_id: str, text: str) -> None:
            sent.append(text)

        tts.add_event_handler("on_tts_request", request)
        async with Harness(tts) as h:
            await h.send(LLMFullResponseStartFrame(), *(LLMTextFrame(p) for p in parts), LLMFullResponseEndFrame())
            assert await h.wait_for(lambda: bool(audio(h)))
            return sent, await h.settle(lambda: audio_bytes(h), quiet=1.5)

    # the family emoji is cut inside its zero-width-joiner sequence, the bold pair across two frames
    decorated = ["**Sure", "!** 😊", " Your 👨\u200d👩", "\u200d👧 table", " is ready 🎉🎉.",
                 "\n- See [the menu](https://example.com/menu_2).", " ✅"]
    sent, decorated_bytes = await speak(decorated)
    # three sentences; the last "sentence", a lone emoji, is not sent at all
    assert len(sent) == 3 and all(t.strip() for t in sent), sent
    for text in sent:
        assert not any(ch in MARKUP_CHARS or unicodedata.category(ch) in ("So", "Sk") or ch == "\u200d"
                       for ch in text), text
    words = "".join(ch for ch in "".join(sent) if ch.isalnum())
    assert words == "SureYourtableisreadySeethemenu"
    # Piper spoke only those words: as long as the plain sentence, not the emoji names and the URL too.
    _, plain_bytes = await speak(["Sure! Your table is ready. See the menu."])
    assert 0.7 < decorated_bytes / plain_bytes < 1.35
