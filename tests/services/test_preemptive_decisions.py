"""The preemptive-reply decisions, one class at a time: the turn-stop strategy (when to start, keep or
withdraw a speculative reply) and the gates (what the caller may hear, and when)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.utils.asyncio.task_manager import TaskManager

from ivrbot.pause_signal import UserPausedFrame, UserResumedFrame
from ivrbot.services.preemptive import (
    SPECULATIVE,
    PreemptiveLLMGate,
    PreemptiveTurnStopStrategy,
    SpeculativeReplyGate,
    normalize,
    transcripts_match,
)
from ivrbot.services.vosk_stt import PAUSE_FINAL

DOWN = FrameDirection.DOWNSTREAM


class Recorder:
    """The aggregator as the strategy sees it: what it was asked to do, in order."""

    def __init__(self, strategy: PreemptiveTurnStopStrategy) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stopped = asyncio.Event()

        async def inference(_: Any, speculation: Any = None) -> None:
            self.events.append(("inference", speculation.text if speculation else None))

        async def cancelled(_: Any) -> None:
            self.events.append(("cancelled", None))

        async def stopped(_: Any, params: Any) -> None:
            self.events.append(("stopped", params.confirms_speculation))
            self.stopped.set()

        strategy.add_event_handler("on_user_turn_inference_triggered", inference)
        strategy.add_event_handler("on_user_turn_speculation_cancelled", cancelled)
        strategy.add_event_handler("on_user_turn_stopped", stopped)


def final(text: str, *, pause: bool = False) -> TranscriptionFrame:
    """A finalized Vosk transcription; ``pause``: it answers the finalize at the caller's pause."""
    frame = TranscriptionFrame(text, "caller", "", result={"text": text, PAUSE_FINAL: pause})
    frame.finalized = True
    return frame


async def strategy_with_recorder() -> tuple[PreemptiveTurnStopStrategy, Recorder]:
    strategy = PreemptiveTurnStopStrategy(user_speech_timeout=0.01)
    await strategy.setup(SimpleNamespace(task_manager=TaskManager(loop=asyncio.get_running_loop())))  # type: ignore[arg-type]
    rec = Recorder(strategy)
    await strategy.handle_user_turn_started()
    return strategy, rec


async def drive(strategy: PreemptiveTurnStopStrategy, *frames: Frame) -> None:
    for f in frames:
        await strategy.process_frame(f)
        await asyncio.sleep(0)


async def settle(rec: Recorder) -> None:
    await asyncio.wait_for(rec.stopped.wait(), 5)
    await asyncio.sleep(0.05)


class TestTurnStopStrategy:
    async def test_pause_final_starts_it_and_a_silent_stop_plays_it_without_a_second_inference(self) -> None:
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, STTMetadataFrame(service_name="vosk", ttfs_p99_latency=1.5),
                    VADUserStartedSpeakingFrame(), UserPausedFrame(), final("what are your hours", pause=True))
        assert rec.events == [("inference", "what are your hours")]
        # The stop's finalize answers an empty segment, which pushes nothing: the turn ends on its own.
        await drive(strategy, VADUserStoppedSpeakingFrame())
        await settle(rec)
        assert rec.events == [("inference", "what are your hours"), ("stopped", True)]
        assert (strategy.started, strategy.matched, strategy.mismatched) == (1, 1, 0)

    async def test_more_words_without_a_resume_withdraw_it_and_answer_the_whole_turn(self) -> None:
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, VADUserStartedSpeakingFrame(), final("what are your", pause=True),
                    VADUserStoppedSpeakingFrame(), final("hours"))
        await settle(rec)
        # withdrawn first, then a normal inference on the committed transcript
        assert rec.events == [("inference", "what are your"), ("cancelled", None), ("inference", None),
                              ("stopped", False)]
        assert (strategy.matched, strategy.mismatched) == (0, 1)

    async def test_caller_resuming_withdraws_it_and_the_next_pause_starts_one_on_the_whole_turn(self) -> None:
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, STTMetadataFrame(service_name="vosk", ttfs_p99_latency=1.5),
                    VADUserStartedSpeakingFrame(), final("what are", pause=True), UserResumedFrame())
        assert rec.events == [("inference", "what are"), ("cancelled", None)]
        assert strategy.pending is None and strategy.resumed == 1
        await drive(strategy, final("your hours", pause=True))
        assert rec.events[2:] == [("inference", "what are your hours")]
        await drive(strategy, VADUserStoppedSpeakingFrame())
        await settle(rec)
        assert rec.events[3:] == [("stopped", True)] and strategy.matched == 1

    async def test_after_a_resume_the_turn_waits_for_the_final_of_the_rest(self) -> None:
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, STTMetadataFrame(service_name="vosk", ttfs_p99_latency=1.5),
                    VADUserStartedSpeakingFrame(), final("what are", pause=True), UserResumedFrame(),
                    VADUserStoppedSpeakingFrame())
        # The pause's final no longer finalizes the turn: the rest is still being decoded.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rec.stopped.wait(), 0.3)
        await drive(strategy, final("your hours"))
        await settle(rec)
        assert rec.events[-1] == ("stopped", False) and strategy.transcript == "what are your hours"

    async def test_caller_speaking_again_after_the_stop_withdraws_it(self) -> None:
        strategy = PreemptiveTurnStopStrategy(user_speech_timeout=5)
        await strategy.setup(SimpleNamespace(task_manager=TaskManager(loop=asyncio.get_running_loop())))  # type: ignore[arg-type]
        rec = Recorder(strategy)
        await strategy.handle_user_turn_started()
        await drive(strategy, VADUserStartedSpeakingFrame(), final("what are", pause=True),
                    VADUserStoppedSpeakingFrame(), VADUserStartedSpeakingFrame())
        assert rec.events == [("inference", "what are"), ("cancelled", None)] and strategy.resumed == 1
        await strategy.cleanup()

    async def test_only_a_pause_final_during_the_pause_starts_one(self) -> None:
        strategy, rec = await strategy_with_recorder()
        # a final of the stop's finalize, or a pause's final arriving after the stop: the turn ends anyway
        await drive(strategy, VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(),
                    final("what are your hours", pause=True))
        await settle(rec)
        assert rec.events == [("inference", None), ("stopped", False)] and strategy.started == 0
        assert strategy.late == 1
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, VADUserStartedSpeakingFrame(), final("what are your hours"))
        assert rec.events == [] and strategy.started == 0

    async def test_no_words_no_speculation(self) -> None:
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, VADUserStartedSpeakingFrame(), UserPausedFrame(), VADUserStoppedSpeakingFrame())
        assert rec.events == [] and strategy.started == 0

    async def test_turn_ending_unresolved_withdraws_it(self) -> None:
        strategy, rec = await strategy_with_recorder()
        await drive(strategy, VADUserStartedSpeakingFrame(), final("hello", pause=True))
        await strategy.handle_user_turn_stopped()  # e.g. Pipecat's stop watchdog
        assert rec.events == [("inference", "hello"), ("cancelled", None)]
        await strategy.cleanup()


def reply(speculative: bool) -> list[Frame]:
    start = LLMFullResponseStartFrame()
    if speculative:
        start.metadata[SPECULATIVE] = True
    return [start, LLMTextFrame("Hello,"), TTSAudioRawFrame(b"\x01\x00" * 160, 22050, 1), LLMFullResponseEndFrame()]


def route_all(gate: SpeculativeReplyGate, frames: list[Frame]) -> list[Frame]:
    return [f for frame in frames for f, _ in gate.route(frame, DOWN)]


class TestSpeculativeReplyGate:
    def test_reply_finished_before_the_confirmation_plays_when_it_comes(self) -> None:
        gate = SpeculativeReplyGate()
        route_all(gate, [UserStartedSpeakingFrame()])
        frames = reply(True)
        assert route_all(gate, frames) == []  # all held, audio included
        stop = UserStoppedSpeakingFrame()
        assert route_all(gate, [stop]) == [stop, *frames]

    def test_confirmation_before_the_reply_lets_it_straight_through(self) -> None:
        gate = SpeculativeReplyGate()
        route_all(gate, [UserStartedSpeakingFrame(), UserStoppedSpeakingFrame()])
        frames = reply(True)
        assert route_all(gate, frames) == frames

    def test_withdrawn_reply_is_never_released(self) -> None:
        gate = SpeculativeReplyGate()
        route_all(gate, [UserStartedSpeakingFrame()])
        first = reply(True)
        assert route_all(gate, first[:3]) == []
        cancel = EagerEndOfTurnCancelFrame()
        assert route_all(gate, [cancel]) == [cancel]
        # Its tail, still on its way, is dropped; then the answer to the final transcript plays.
        assert route_all(gate, first[3:]) == []
        stop = UserStoppedSpeakingFrame()
        assert route_all(gate, [stop]) == [stop]
        second = reply(False)
        assert route_all(gate, second) == second

    def test_ordinary_replies_pass(self) -> None:
        gate = SpeculativeReplyGate()
        frames = reply(False)
        assert route_all(gate, frames) == frames


class TestPreemptiveLLMGate:
    def test_passes_everything_and_marks_a_speculative_reply(self) -> None:
        gate = PreemptiveLLMGate()
        gate.process(UserStartedSpeakingFrame(), DOWN)
        gate.begin_speculation(True)
        start = LLMFullResponseStartFrame()
        assert gate.process(start, DOWN) == [(start, DOWN)]
        assert start.metadata.get(SPECULATIVE) is True and gate.is_speculating
        text = LLMTextFrame("hi")
        assert gate.process(text, DOWN) == [(text, DOWN)]
        gate.process(EagerEndOfTurnCancelFrame(), DOWN)
        assert not gate.is_speculating  # a withdrawal stops the LLM, which asks this

    def test_after_the_confirmation_nothing_is_speculative(self) -> None:
        gate = PreemptiveLLMGate()
        gate.process(UserStartedSpeakingFrame(), DOWN)
        gate.process(UserStoppedSpeakingFrame(), DOWN)
        gate.begin_speculation(True)
        start = LLMFullResponseStartFrame()
        gate.process(start, DOWN)
        assert SPECULATIVE not in start.metadata


words = st.lists(st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=8), min_size=1,
                 max_size=8)


@given(words, st.lists(st.sampled_from([" ", "  ", "\t", ", ", ". ", "? ", "! ", " - "]), min_size=8, max_size=8),
       st.booleans())
def test_formatting_never_decides_a_match(ws: list[str], seps: list[str], upper: bool) -> None:
    plain = " ".join(ws)
    formatted = "".join(w + seps[i % len(seps)] for i, w in enumerate(ws))
    # an STT capitalizes; letters whose upper case folds to another letter (Turkish dotless i) aside
    if upper and formatted.upper().casefold() == formatted.casefold():
        formatted = formatted.upper()
    assert transcripts_match(plain, formatted)


@given(words, words)
def test_different_words_never_match(a: list[str], b: list[str]) -> None:
    if normalize(" ".join(a)).split() != normalize(" ".join(b)).split():
        assert not transcripts_match(" ".join(a), " ".join(b))


def test_nfkc_width_and_case_forms_match() -> None:
    assert transcripts_match("ＷＨＡＴ ａｒｅ your hours", "what are your HOURS?")
    assert not transcripts_match("what are your hours", "what are your")
