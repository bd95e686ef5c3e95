"""Barge-in with the full assistant: the caller talks over a long greeting.

How long the greeting would have run is measured by synthesising it with the same Piper voice;
the caller must hear the bot go quiet long before that, and the caller's words must be transcribed.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from ivrbot.apology import render_apology
from ivrbot_tools.local import LocalBot

from .conftest import BotFactory
from .support import E2ECaller, events_named, first_quiet_after, question_pcm8k, tools_missing, until, wait_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.skipif(tools_missing(), reason="needs sipp, espeak-ng and sox"),
]

GREETING = (
    "Hello, and thank you for calling the demonstration line of our company. "
    "This greeting is deliberately long, so that a caller has plenty of time to interrupt it. "
    "Our opening hours are from nine in the morning until six in the evening, Monday to Friday, "
    "and from ten until four on Saturdays. On Sundays and public holidays the office is closed. "
    "You can ask me about opening hours, directions, prices, and the status of an order. "
    "If you would like to speak to a person, press one at any time, and I will transfer your call."
)
#: silence (seconds) the bot must keep after the caller starts talking over it
QUIET_SECS = 1.5
#: how much of the greeting must have been left unplayed for the stop to count as an interruption
UNPLAYED_SECS = 5.0


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def bot(make_bot: BotFactory) -> LocalBot:
    return await make_bot(IVRBOT_GREETING=GREETING, IVRBOT_MAX_TOKENS="40")


async def test_caller_talking_over_the_greeting_stops_it_and_is_transcribed(bot: LocalBot) -> None:
    greeting_secs = (await asyncio.to_thread(render_apology, GREETING)).seconds
    assert greeting_secs > 20.0, greeting_secs  # long enough that an interruption is unmistakable
    question = question_pcm8k()
    async with E2ECaller(bot.sip_target) as call:
        cid = call.record.call_id
        t_greeting = await call.wait_audible(0.0, 60.0)
        assert t_greeting is not None, "the greeting never started"
        await asyncio.sleep(2.0)  # well into the greeting
        t_talk = time.monotonic()
        await call.play(question)
        assert await until(lambda: first_quiet_after(call.record, t_talk, QUIET_SECS) is not None, 30.0), (
            "the bot kept talking over the caller"
        )
        said = await wait_text(bot, cid, "caller said", 60.0)
        assert await call.bye() == 200
    quiet_from = first_quiet_after(call.record, t_talk, QUIET_SECS)
    assert quiet_from is not None
    heard_greeting = call.record.audible_seconds(t_greeting) - call.record.audible_seconds(quiet_from)
    # the bot stopped with most of its greeting still to say: it did not just finish it
    assert heard_greeting < greeting_secs - UNPLAYED_SECS, (heard_greeting, greeting_secs)
    assert quiet_from - t_greeting < greeting_secs - UNPLAYED_SECS, (quiet_from - t_greeting, greeting_secs)
    assert said, "the utterance that interrupted the bot was not transcribed"
    greeting_turns = [e for e in events_named(bot, cid, "bot said") if str(e.get("text", "")).startswith("Hello")]
    assert greeting_turns and greeting_turns[0].get("interrupted") is True, greeting_turns
