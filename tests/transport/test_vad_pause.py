"""The VAD's pause signal: once per pause of ``pause_secs`` inside an utterance, re-armed when the
caller resumes, never after the stop. The state machine is driven window by window with a scripted
speech decision (Silero and the loudness measure replaced in this one class); one test runs the
real model on synthetic caller speech."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from ivrbot.assistant_settings import VadSettings
from ivrbot.vad import InlineSileroVADAnalyzer, make_vad, vad_params
from ivrbot_tools.speech_samples import SpeechToolMissing, caller_speech, silence

WINDOW = 1024  # one Silero window at 16 kHz (512 samples, 32 ms)
STOP_SECS = 0.3  # 9 windows


class Scripted(InlineSileroVADAnalyzer):
    """Speech is whatever the window's first byte says."""

    def __init__(self, pause_secs: float) -> None:
        super().__init__(sample_rate=16000, params=VADParams(confidence=0.5, start_secs=0.1, stop_secs=STOP_SECS,
                                                             min_volume=0.1), pause_secs=pause_secs)
        self.set_sample_rate(16000)
        self.signals: list[bool] = []

        async def record(paused: bool) -> None:
            self.signals.append(paused)

        self.on_pause = record

    def _get_smoothed_volume(self, audio: bytes) -> float:
        return 1.0

    def _confidence(self, window: bytes, volume: float) -> float:
        return 1.0 if window[0] else 0.0


def window(speech: bool) -> bytes:
    return (b"\x01" if speech else b"\x00") * WINDOW


async def feed(vad: Scripted, windows: list[bool], per_call: int = 1) -> list[tuple[VADState, list[bool], int]]:
    """Per call: the state returned, the signals it gave, the silent windows trailing at its end."""
    out = []
    run = 0
    for i in range(0, len(windows), per_call):
        chunk = windows[i : i + per_call]
        for s in chunk:
            run = 0 if s else run + 1
        before = len(vad.signals)
        state = await vad.analyze_audio(b"".join(window(s) for s in chunk))
        out.append((state, vad.signals[before:], run))
    return out


def talk(n: int) -> list[bool]:
    return [True] * n


def hush(n: int) -> list[bool]:
    return [False] * n


class TestPauseSignal:
    async def test_fires_once_per_pause_and_is_rearmed_when_the_caller_resumes(self) -> None:
        vad = Scripted(0.15)  # 5 windows
        calls = await feed(vad, talk(10) + hush(7) + talk(6) + hush(8) + talk(4))
        assert vad.signals == [True, False, True, False]
        fired = [i for i, (_, sig, _) in enumerate(calls) if sig == [True]]
        assert [calls[i][2] for i in fired] == [5, 5]  # on the fifth silent window of each pause
        assert all(calls[i][0] is VADState.STOPPING for i in fired)

    async def test_a_pause_shorter_than_pause_secs_signals_nothing(self) -> None:
        vad = Scripted(0.15)
        await feed(vad, talk(10) + hush(4) + talk(5) + hush(3) + talk(5))
        assert vad.signals == []

    async def test_never_after_the_stop(self) -> None:
        vad = Scripted(0.15)
        calls = await feed(vad, talk(10) + hush(40))
        assert vad.signals == [True]  # the pause, then the stop says the rest; no resume, no second pause
        assert calls[-1][0] is VADState.QUIET
        # A new utterance after the stop gets its own pause.
        await feed(vad, talk(10) + hush(6))
        assert vad.signals == [True, True]

    async def test_pause_and_stop_in_one_chunk_give_only_the_stop(self) -> None:
        vad = Scripted(0.15)
        await feed(vad, talk(10))
        calls = await feed(vad, hush(12), per_call=12)
        assert calls[0][0] is VADState.QUIET and vad.signals == []

    async def test_a_resume_and_the_next_pause_in_one_chunk_are_both_told(self) -> None:
        # Found by the property below: the pending pause overwrote the pending resume, so the
        # listener heard two pauses and never the resume between them.
        vad = Scripted(0.064)  # 2 windows
        await feed(vad, talk(10) + hush(2))
        assert vad.signals == [True]
        await feed(vad, [True, False, False], per_call=3)
        assert vad.signals == [True, False, True]

    async def test_zero_disables_it(self) -> None:
        vad = Scripted(0.0)
        await feed(vad, talk(10) + hush(7) + talk(5) + hush(20))
        assert vad.signals == []

    def test_pause_not_shorter_than_the_stop_is_refused(self) -> None:
        with pytest.raises(ValueError, match="pause_secs"):
            vad_params(VadSettings(stop_secs=0.3, pause_secs=0.3))
        with pytest.raises(ValueError, match="pause_secs"):
            vad_params(VadSettings(pause_secs=-0.1))

    def test_the_default_pause_is_shorter_than_the_stop(self) -> None:
        d = VadSettings()
        assert 0 < d.pause_secs < d.stop_secs


runs = st.lists(st.tuples(st.booleans(), st.integers(1, 14)), min_size=1, max_size=30)


def expand(spec: list[tuple[bool, int]]) -> list[bool]:
    return [s for s, n in spec for _ in range(n)]


@settings(max_examples=300, deadline=None)
@given(runs, st.sampled_from([0.032, 0.064, 0.1, 0.15, 0.25]), st.sampled_from([1, 2, 3]))
async def test_at_most_one_pause_between_speech_and_none_for_a_short_pause(
    spec: list[tuple[bool, int]], pause_secs: float, per_call: int
) -> None:
    vad = Scripted(pause_secs)
    pause_frames = round(pause_secs / 0.032)
    windows = expand(spec)
    calls = await feed(vad, windows, per_call)
    armed = True  # no pause signalled since the last speech or stop
    prev: tuple[VADState, list[bool], int] | None = None
    for k, (state, signals, run) in enumerate(calls):
        spoke = any(windows[k * per_call : (k + 1) * per_call])
        for paused in signals:
            if paused:
                assert armed, "a second pause without speech in between"
                assert state is VADState.STOPPING and run >= pause_frames, (state, run, pause_frames)
                armed = False
            else:
                assert not armed, "a resume without a pause"
                # the caller spoke in this chunk (it may end in silence again, or in the next pause)
                assert spoke and state is not VADState.QUIET, (state, signals)
                armed = True
        if state is VADState.QUIET:
            armed = True
        if per_call == 1:
            # exact: a pause on the window that completes pause_frames of silence, a resume on the
            # speech that ends a signalled pause before the stop
            pause_due = state is VADState.STOPPING and run == pause_frames
            resumed = (prev is not None and prev[0] is VADState.STOPPING and prev[2] >= pause_frames
                       and state is VADState.SPEAKING)
            assert signals == ([True] if pause_due else [False] if resumed else []), (state, run, signals)
        prev = (state, signals, run)


async def test_real_silero_pauses_once_before_stopping_after_a_question() -> None:
    try:
        speech = caller_speech("안녕하세요 영업 시간이 어떻게 되나요", voice="ko")
    except SpeechToolMissing as exc:
        pytest.skip(str(exc))
    vad = make_vad(VadSettings())
    vad.set_sample_rate(16000)
    events: list[str] = []

    async def record(paused: bool) -> None:
        events.append("pause" if paused else "resume")

    vad.on_pause = record
    pcm = speech + silence(1.5)
    last = VADState.QUIET
    for i in range(0, len(pcm) - 1279, 1280):  # 40 ms chunks, as the transport pushes them
        state = await vad.analyze_audio(pcm[i : i + 1280])
        if state in (VADState.SPEAKING, VADState.QUIET) and state is not last:
            events.append(state.name.lower())
            last = state
    # espeak's word gaps may or may not count as pauses; the question's end always does, before the stop
    assert events[0] == "speaking" and events[-2:] == ["pause", "quiet"], events
    assert events.count("quiet") == 1
