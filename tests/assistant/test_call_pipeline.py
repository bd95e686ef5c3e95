"""The whole per-call pipeline with the real Vosk, llama-server and Piper: speech in, reply audio out."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from call import Call, urls
from conftest import RecordingCallControl
from pipecat.frames.frames import InputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from sidecar_procs import SidecarProcess

from ivrbot.assistant_settings import AssistantSettings
from ivrbot_tools.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

QUESTION = "안녕하세요. 오늘 날씨가 어때요?"
GREETING_LONG = (
    "Welcome to the city library. Our opening hours are from nine in the morning until eight in the "
    "evening, Monday to Saturday. On Sundays we are closed. You can borrow up to ten books at a time. "
    "Late returns cost ten cents per day. How can I help you today?"
)


def settings(vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess, **kw: object) -> AssistantSettings:
    return AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=40, **kw)  # type: ignore[arg-type]


class InputAudioSeen(BaseObserver):
    """Which processors were handed the caller's audio."""

    def __init__(self) -> None:
        super().__init__()
        self.receivers: Counter[str] = Counter()

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, InputAudioRawFrame) and data.direction is FrameDirection.DOWNSTREAM:
            self.receivers[data.destination.name] += 1


async def test_speech_in_reply_audio_out(vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess,
                                         call_control: RecordingCallControl) -> None:
    seen = InputAudioSeen()
    async with Call(settings(vosk, piper, llama), call_control) as c:
        c.assistant.worker.add_observer(seen)
        assert await c.wait_for(lambda: c.assistant.stt.connected)
        c.transport.say(caller_speech(QUESTION) + silence(1.0))
        asked = time.monotonic()
        assert await c.wait_for(lambda: bool(c.assistant.transcripts))
        assert c.assistant.transcripts[0].strip()
        assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies))
        # The caller hears the reply: non-silent audio after the question.
        assert await c.wait_for(lambda: c.transport.out_voiced_secs(since=asked) > 0.5)
        assert c.assistant.apologies_played == 0 and c.assistant.errors == []
        assert call_control.hangups == []
        # the LLM prefill (on by default) sat between the STT and the aggregator and saw the partials
        prefill = c.assistant.prefill
        assert prefill is not None and prefill.sent >= 1 and prefill.failed == 0
    assert c.finished
    # The VAD (in the user aggregator) heard the caller; nothing after it was handed the audio.
    user = c.assistant.aggregators.user().name
    assert seen.receivers[user] > 0 and seen.receivers[c.assistant.audio_end.name] == seen.receivers[user]
    after = [c.assistant.llm.name, c.assistant.tts.name, c.assistant.aggregators.assistant().name]
    assert all(seen.receivers[name] == 0 for name in after), seen.receivers


async def test_greeting_is_spoken_at_answer(vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess,
                                            call_control: RecordingCallControl) -> None:
    async with Call(settings(vosk, piper, llama, greeting="Hello, how can I help?"), call_control) as c:
        assert await c.wait_for(lambda: c.transport.out_voiced_secs() > 0.5)
        assert await c.wait_for(lambda: c.assistant.context.messages[:1] ==
                                [{"role": "assistant", "content": "Hello, how can I help?"}])


async def test_barge_in_stops_the_bot_and_answers_the_caller(
    vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess, call_control: RecordingCallControl
) -> None:
    marks: dict[str, float] = {}
    async with Call(settings(vosk, piper, llama, greeting=GREETING_LONG), call_control) as c:
        user = c.assistant.aggregators.user()

        async def started(*_: object) -> None:
            marks.setdefault("barge", time.monotonic())

        async def stopped(*_: object) -> None:
            marks.setdefault("turn_end", time.monotonic())

        user.add_event_handler("on_user_turn_started", started)
        user.add_event_handler("on_user_turn_stopped", stopped)
        # The greeting is playing (about 15 s of speech) when the caller talks over it.
        assert await c.wait_for(lambda: c.transport.out_voiced_secs() > 1.0)
        c.transport.say(caller_speech(QUESTION) + silence(1.0))
        assert await c.wait_for(lambda: "turn_end" in marks)
        # While the caller spoke, the bot was silent: the greeting's queued audio was dropped.
        window = marks["turn_end"] - marks["barge"]
        spoken_over = c.transport.out_voiced_secs(since=marks["barge"]) - c.transport.out_voiced_secs(
            since=marks["turn_end"])
        assert spoken_over < 0.25 * window
        # The new utterance was transcribed and is answered.
        assert c.assistant.transcripts and c.assistant.transcripts[0].strip()
        assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies[1:]))
        assert c.assistant.replies[0] == GREETING_LONG  # the greeting turn, marked interrupted


async def test_silence_timeout_hangs_up(vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess,
                                        call_control: RecordingCallControl) -> None:
    async with Call(settings(vosk, piper, llama, silence_timeout_secs=1.5), call_control) as c:
        assert await c.wait_for(lambda: call_control.hangups == ["silence"])
        assert c.assistant.hangup_reason == "silence"
