"""The full assistant over real calls: a spoken question answered, DTMF menu actions, two calls at once.

One `ivrbot serve` process on the package's speech stack (Vosk, llama-server, Piper), no greeting,
so every audible packet a caller hears is a reply to something said in its own call.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio

from ivrbot_tools.demo import ask_one_question
from ivrbot_tools.local import LocalBot, wait_for_event

from .conftest import BotFactory
from .support import E2ECaller, question_pcm8k, texts, tools_missing, until, wait_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.skipif(tools_missing(), reason="needs sipp, espeak-ng and sox"),
]

TRANSFER_TARGET = "sip:operator@127.0.0.1:5999"
DTMF_MAP = {"1": {"action": "transfer", "target": TRANSFER_TARGET}, "9": {"action": "hangup"}}


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def bot(make_bot: BotFactory) -> LocalBot:
    # no silence hang-up during a test: the silent caller of the two-call test must stay on the line
    return await make_bot(
        IVRBOT_GREETING="",
        IVRBOT_DTMF_MAP=json.dumps(DTMF_MAP),
        IVRBOT_MAX_TOKENS="40",
        IVRBOT_SILENCE_TIMEOUT_SECS="600",
    )


async def test_spoken_question_is_transcribed_answered_and_heard(bot: LocalBot) -> None:
    result = await ask_one_question(bot, question_pcm8k(), wait_greeting=False, reply_timeout=90.0)
    cid = result["call_id"]
    assert texts(bot, cid, "caller said"), "Vosk gave no transcript of the question"
    assert await wait_text(bot, cid, "bot said", 15.0), "the LLM's answer was not logged"
    assert result["caller_latency_ms"] is not None, "the caller heard no reply"
    assert result["reply_audio_s"] >= 0.5, result["reply_audio_s"]


async def _wait_pipeline(bot: LocalBot, call_id: str) -> None:
    assert await wait_for_event(bot, call_id, "call pipeline started", 30.0) is not None


async def test_dtmf_transfer_key_sends_refer_then_bye(bot: LocalBot) -> None:
    async with E2ECaller(bot.sip_target) as call:
        await _wait_pipeline(bot, call.record.call_id)
        await call.press("1")
        await asyncio.wait_for(call.ended.wait(), 30.0)
    rec = call.record
    assert rec.refer_to == TRANSFER_TARGET
    assert rec.bye_from_bot
    assert rec.requests_from_bot.index("REFER") < rec.requests_from_bot.index("BYE"), rec.requests_from_bot
    # the bot left only after the NOTIFY said the transfer succeeded
    outcome = await wait_for_event(bot, rec.call_id, "sip.transfer_outcome", 5.0)
    assert outcome is not None and outcome["ok"] is True, outcome


async def test_dtmf_hangup_key_sends_bye(bot: LocalBot) -> None:
    async with E2ECaller(bot.sip_target) as call:
        await _wait_pipeline(bot, call.record.call_id)
        await call.press("9")
        await asyncio.wait_for(call.ended.wait(), 30.0)
    assert call.record.bye_from_bot
    assert "REFER" not in call.record.requests_from_bot
    ended = await wait_for_event(bot, call.record.call_id, "call ended", 15.0)
    assert ended is not None and ended["reason"] == "local_bye", ended


async def test_two_calls_at_once_do_not_hear_each_other(bot: LocalBot) -> None:
    async with E2ECaller(bot.sip_target) as silent, E2ECaller(bot.sip_target) as asking:
        await _wait_pipeline(bot, silent.record.call_id)
        await _wait_pipeline(bot, asking.record.call_id)
        await asking.play(question_pcm8k())
        t_end = time.monotonic()
        assert await asking.wait_audible(t_end, 90.0) is not None, "the asking caller heard no reply"
        await asking.wait_quiet(1.2, 30.0)
        assert await until(lambda: bool(texts(bot, asking.record.call_id, "bot said")), 15.0)
        assert await asking.bye() == 200
        assert await silent.bye() == 200
    assert asking.record.audible_seconds(t_end) >= 0.5
    assert silent.record.heard, "the silent call received no RTP at all"
    assert silent.record.audible_seconds(0.0) == 0.0, "the silent caller heard audio (another call's reply?)"
    assert texts(bot, asking.record.call_id, "caller said")
    assert not texts(bot, silent.record.call_id, "caller said")
    assert not texts(bot, silent.record.call_id, "bot said")
