"""Preemptive replies with the real Vosk, llama-server and Piper: started on the final Vosk gives at
the caller's pause, played when the caller stays silent, withdrawn unheard when the caller goes on."""

from __future__ import annotations

import time
from typing import Any

import pytest
from call import Call, urls
from conftest import RecordingCallControl
from sidecar_procs import SidecarProcess

from ivrbot.assistant_settings import AssistantSettings, VadSettings
from ivrbot.services.preemptive import PreemptiveTurnStopStrategy, normalize
from ivrbot_tools.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

QUESTION = "안녕하세요 오늘 날씨가 어때요"  # no full stop: espeak pauses there and splits the turn
#: a VAD stop this long after the caller's last word leaves a loaded Vosk time to answer the pause
SLOW_STOP_SECS = 3.0


def settings(vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess, **kw: Any) -> AssistantSettings:
    return AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=40,  # type: ignore[arg-type]
                             preemptive_replies=True, **kw)


def count_llm_requests(c: Call) -> list[str]:
    """The user text of every chat request the call's LLM service sends (its last message)."""
    asked: list[str] = []
    llm = c.assistant.llm
    original = llm.get_chat_completions

    async def recording(context: Any) -> Any:
        messages = context.get_messages()
        asked.append(str(messages[-1].get("content", "")) if messages else "")
        return await original(context)

    llm.get_chat_completions = recording  # type: ignore[method-assign]
    return asked


def turn_marks(c: Call) -> dict[str, float]:
    marks: dict[str, float] = {}

    async def stopped(*_: object) -> None:
        marks.setdefault("turn_end", time.monotonic())

    c.assistant.aggregators.user().add_event_handler("on_user_turn_stopped", stopped)
    return marks


async def test_a_question_ending_in_silence_is_answered_by_the_reply_started_at_its_pause(
    vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess, call_control: RecordingCallControl
) -> None:
    # The reply starts on the final Vosk gave at the pause, and the caller says nothing more before
    # the VAD's stop, so the turn's transcript is that final: it matches by construction. The stop
    # comes late here: on this shared machine Vosk can be a second behind real time, and a pause
    # final that arrives after the stop starts nothing (the turn ends on it at once).
    async with Call(settings(vosk, piper, llama, vad=VadSettings(stop_secs=SLOW_STOP_SECS)), call_control) as c:
        strategy = c.assistant.turn_stop
        assert isinstance(strategy, PreemptiveTurnStopStrategy)
        asked = count_llm_requests(c)
        assert await c.wait_for(lambda: c.assistant.stt.connected)
        c.transport.say(caller_speech(QUESTION) + silence(2.0))
        sent = time.monotonic()
        assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies))
        assert await c.wait_for(lambda: c.transport.out_voiced_secs(since=sent) > 0.5)
        # Kept: the LLM was asked only by speculations (one per pause; espeak's gaps between words may
        # make more than the question's end a pause, and a resume withdraws those), never once more.
        assert strategy.matched == 1 and strategy.mismatched == 0, (strategy.matched, strategy.mismatched, asked)
        assert strategy.resumed == strategy.started - 1, (strategy.started, strategy.resumed)
        assert len(asked) == strategy.started, asked
        assert normalize(asked[-1]) == normalize(c.assistant.transcripts[-1]), (asked, c.assistant.transcripts)
        # The conversation holds the final transcript and one reply, as without preemption.
        roles = [m["role"] for m in c.assistant.context.messages]  # type: ignore[index]
        assert roles[:2] == ["user", "assistant"] and roles.count("assistant") == 1, roles
        assert c.assistant.errors == []


async def test_caller_resuming_withdraws_the_preemptive_reply_unheard(
    vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess, call_control: RecordingCallControl
) -> None:
    # The VAD's stop comes late and the turn is confirmed no sooner than 30 s after it, so the caller's
    # pause starts a preemptive reply and the caller goes on speaking before anything can confirm it.
    slow = settings(vosk, piper, llama, turn_stop_secs=30.0, vad=VadSettings(stop_secs=SLOW_STOP_SECS))
    async with Call(slow, call_control) as c:
        strategy = c.assistant.turn_stop
        assert isinstance(strategy, PreemptiveTurnStopStrategy)
        asked = count_llm_requests(c)
        marks = turn_marks(c)
        assert await c.wait_for(lambda: c.assistant.stt.connected)
        c.transport.say(caller_speech("안녕하세요 오늘") + silence(1.0))
        sent = time.monotonic()
        assert await c.wait_for(lambda: strategy.started == 1)
        # Let the reply get going: llama-server asked, then the caller goes on.
        assert await c.wait_for(lambda: len(asked) == 1)
        c.transport.say(caller_speech("날씨가 어때요") + silence(1.0))
        assert await c.wait_for(lambda: strategy.resumed == 1)
        assert await c.wait_for(lambda: "turn_end" in marks, timeout=180)
        # Nothing was heard before the confirmed end of the turn: the withdrawn reply never played.
        assert c.transport.out_voiced_secs(since=sent) - c.transport.out_voiced_secs(since=marks["turn_end"]) == 0
        # The whole question is answered and heard.
        assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies))
        assert await c.wait_for(lambda: c.transport.out_voiced_secs(since=marks["turn_end"]) > 0.5)
        assert c.assistant.errors == []
