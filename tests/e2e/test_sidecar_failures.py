"""A sidecar down: the call still gets its apology, ends cleanly, and the next call works once it is back.

llama-server, then Piper, then Vosk is stopped (the real process), a call is placed and the caller
asks a question; then the same sidecar is started again on the same port and a second call must
get a transcript and a spoken answer. The bot process is the same throughout: it must not crash.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from ivrbot_sidecars.process import ManagedProcess
from ivrbot_tools.demo import ask_one_question
from ivrbot_tools.local import LocalBot, wait_for_event
from ivrbot_tools.stack import Stack

from .conftest import BotFactory
from .support import E2ECaller, events_named, question_pcm8k, ready, texts, tools_missing, wait_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.skipif(tools_missing(), reason="needs sipp, espeak-ng and sox"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def bot(make_bot: BotFactory) -> LocalBot:
    return await make_bot(IVRBOT_GREETING="", IVRBOT_MAX_TOKENS="40", IVRBOT_SILENCE_TIMEOUT_SECS="600")


def _sidecar(stack: Stack, name: str) -> ManagedProcess:
    return {"llama": stack.llama.process, "piper": stack.piper, "vosk": stack.vosk}[name]


async def _wait_ready(bot: LocalBot, timeout: float) -> int:
    """Poll the bot's /readyz (which checks the sidecars) until it says 200; returns the last status."""
    deadline = time.monotonic() + timeout
    status = await ready(bot)
    while status != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        status = await ready(bot)
    return status


@pytest.mark.parametrize("sidecar", ["llama", "piper", "vosk"])
async def test_call_with_a_sidecar_down_gets_an_apology_and_the_next_call_works(
    bot: LocalBot, speech_stack: Stack, sidecar: str
) -> None:
    proc = _sidecar(speech_stack, sidecar)
    await proc.stop()
    assert not proc.running
    try:
        async with E2ECaller(bot.sip_target) as call:
            cid = call.record.call_id
            assert call.record.status == 200
            assert await wait_for_event(bot, cid, "call pipeline started", 30.0) is not None
            await call.play(question_pcm8k())
            assert await call.wait_audible(0.0, 60.0) is not None, "no apology heard"
            assert await wait_for_event(bot, cid, "playing apology", 10.0) is not None
            assert await call.bye() == 200
    finally:
        if not proc.running:
            await proc.start()  # the same command on the same port
    assert bot.bot is not None and bot.bot.running, "the bot process died"
    ended = await wait_for_event(bot, cid, "call ended", 20.0)
    assert ended is not None and ended["reason"] == "remote_bye", ended
    # the failure is logged with this call's id and names the sidecar's service
    failures = events_named(bot, cid, "sidecar failure")
    assert any(sidecar in str(e.get("service", "")).lower() for e in failures), failures
    if sidecar != "piper":  # without the STT or the LLM there is no answer to speak
        assert not texts(bot, cid, "bot said")

    # the sidecar is back (the bot's readiness sees it) and the next call is served in full
    assert await _wait_ready(bot, 60.0) == 200
    result = await ask_one_question(bot, question_pcm8k(), wait_greeting=False, reply_timeout=90.0)
    second = result["call_id"]
    assert texts(bot, second, "caller said"), f"no transcript after {sidecar} came back"
    assert await wait_text(bot, second, "bot said", 15.0), f"no answer after {sidecar} came back"
    assert result["reply_audio_s"] >= 0.5, result
    assert not events_named(bot, second, "playing apology")
    assert bot.bot is not None and bot.bot.running
