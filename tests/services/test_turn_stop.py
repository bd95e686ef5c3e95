"""The bot's turn end with Vosk finalized at the caller's pause (``turn_stop.py``): the turn ends on
the VAD's stop when the pause's final is in, and a resume makes that final a first part only."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pipecat.frames.frames import (
    Frame,
    STTMetadataFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.utils.asyncio.task_manager import TaskManager

from ivrbot.assistant_settings import AssistantSettings
from ivrbot.pause_signal import UserPausedFrame, UserResumedFrame
from ivrbot.services.vosk_stt import PAUSE_FINAL
from ivrbot.turn_stop import PauseAwareTurnStopStrategy


def final(text: str, *, pause: bool = False) -> TranscriptionFrame:
    frame = TranscriptionFrame(text, "caller", "", result={"text": text, PAUSE_FINAL: pause})
    frame.finalized = True
    return frame


async def strategy() -> tuple[PauseAwareTurnStopStrategy, list[str]]:
    s = PauseAwareTurnStopStrategy(user_speech_timeout=AssistantSettings().turn_stop_secs)
    await s.setup(SimpleNamespace(task_manager=TaskManager(loop=asyncio.get_running_loop())))  # type: ignore[arg-type]
    ended: list[str] = []

    async def stopped(_: object, params: object) -> None:
        ended.append(s._text)

    s.add_event_handler("on_user_turn_stopped", stopped)
    await s.handle_user_turn_started()
    await s.process_frame(STTMetadataFrame(service_name="vosk", ttfs_p99_latency=1.5))
    return s, ended


async def drive(s: PauseAwareTurnStopStrategy, *frames: Frame) -> None:
    for f in frames:
        await s.process_frame(f)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_turn_ends_on_the_stop_when_the_pause_final_is_in() -> None:
    s, ended = await strategy()
    await drive(s, VADUserStartedSpeakingFrame(), UserPausedFrame(), final("what are your hours", pause=True))
    assert ended == []  # the caller may still go on: the VAD has not stopped
    await drive(s, VADUserStoppedSpeakingFrame(stop_secs=0.3))
    assert ended == ["what are your hours"]  # no wait for the stop's finalize, which answers silence


async def test_a_pause_final_after_the_stop_ends_the_turn_when_it_comes() -> None:
    s, ended = await strategy()
    await drive(s, VADUserStartedSpeakingFrame(), UserPausedFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.3))
    assert ended == []
    await drive(s, final("what are your hours", pause=True))
    assert ended == ["what are your hours"]


async def test_after_a_resume_the_turn_waits_for_the_final_of_the_rest() -> None:
    s, ended = await strategy()
    await drive(s, VADUserStartedSpeakingFrame(), UserPausedFrame(), final("what are", pause=True),
                UserResumedFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.3))
    await asyncio.sleep(0.3)
    assert ended == []  # the pause's final no longer finalizes the turn
    await drive(s, final("your hours"))
    assert len(ended) == 1 and ended[0].endswith("your hours")
