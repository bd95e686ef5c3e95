"""A sidecar that is down (or dies) never ends the call: the caller hears the apology, the call goes on,
and the next turn works once the sidecar is back."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from call import Call, urls
from conftest import RecordingCallControl
from sidecar_procs import SidecarProcess, llama_process, piper_process, vosk_process

from ivrbot.apology import render_apology, tone_apology
from ivrbot.assistant_settings import AssistantSettings
from ivrbot.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

QUESTION = "안녕하세요. 오늘 날씨가 어때요?"


def test_apology_is_rendered_locally_with_piper() -> None:
    a = render_apology("Sorry, I am having trouble right now.")
    assert a.text and a.sample_rate == 22050 and a.seconds > 1.0
    pcm = np.frombuffer(a.audio, dtype="<i2").astype(np.float64)
    assert float(np.sqrt(np.mean(pcm * pcm))) > 300


def test_apology_falls_back_to_a_tone_without_a_voice(tmp_path: Path) -> None:
    a = render_apology("Sorry.", voice_path=tmp_path / "missing.onnx")
    if a.text:  # PIPER_VOICE / the packaged voice was used instead of the missing one
        pytest.skip("a default voice is installed")
    assert a == tone_apology()


async def ask(c: Call) -> float:
    c.transport.say(caller_speech(QUESTION) + silence(1.0))
    return time.monotonic()


async def test_llama_down_then_back(sidecar_logs: Path, vosk: SidecarProcess, piper: SidecarProcess,
                                    call_control: RecordingCallControl) -> None:
    llama = llama_process(sidecar_logs)  # not started: its port refuses connections
    s = AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=30)  # type: ignore[arg-type]
    apology = render_apology(s.apology_text)
    try:
        async with Call(s, call_control, apology=apology) as c:
            assert await c.wait_for(lambda: c.assistant.stt.connected)
            asked = await ask(c)
            assert await c.wait_for(lambda: c.assistant.apologies_played == 1)
            assert any("LlamaLLMService" in e for e in c.assistant.errors)
            # The caller hears it (the apology is ~3 s of speech).
            assert await c.wait_for(lambda: c.transport.out_voiced_secs(since=asked) > 1.0)
            assert not c.finished
            await llama.astart()
            replies = sum(1 for r in c.assistant.replies if r.strip())
            await ask(c)
            assert await c.wait_for(lambda: sum(1 for r in c.assistant.replies if r.strip()) > replies)
            assert call_control.hangups == []
    finally:
        llama.stop()


async def test_piper_dies_mid_call_then_back(sidecar_logs: Path, vosk: SidecarProcess, llama: SidecarProcess,
                                             call_control: RecordingCallControl) -> None:
    piper = piper_process(sidecar_logs)
    piper.start()
    s = AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=30,  # type: ignore[arg-type]
                          greeting="Hello.")
    try:
        async with Call(s, call_control, apology=render_apology(s.apology_text)) as c:
            assert await c.wait_for(lambda: c.transport.out_voiced_secs() > 0.25)  # greeting heard
            await piper.astop()
            assert await c.wait_for(lambda: c.assistant.apologies_played >= 1)
            assert any("PiperTTSService" in e for e in c.assistant.errors)
            mark = time.monotonic()
            # The apology plays although Piper is down: it was rendered at process start.
            assert await c.wait_for(lambda: c.transport.out_voiced_secs(since=mark - 1) > 1.0)
            await piper.astart()
            before = len(c.assistant.replies)
            asked = await ask(c)
            assert await c.wait_for(lambda: len(c.assistant.replies) > before and c.assistant.replies[-1].strip()
                                    and c.transport.out_voiced_secs(since=asked) > 0.5)
            assert not c.finished
    finally:
        piper.stop()


async def test_vosk_down_then_back(sidecar_logs: Path, piper: SidecarProcess, llama: SidecarProcess,
                                   call_control: RecordingCallControl) -> None:
    vosk = vosk_process(sidecar_logs)  # not started yet
    s = AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=30)  # type: ignore[arg-type]
    try:
        async with Call(s, call_control, apology=render_apology(s.apology_text)) as c:
            assert await c.wait_for(lambda: c.assistant.apologies_played == 1)
            assert any("VoskSTTService" in e for e in c.assistant.errors)
            assert await c.wait_for(lambda: c.transport.out_voiced_secs() > 1.0)
            await vosk.astart()
            assert await c.wait_for(lambda: c.assistant.stt.connected)
            await ask(c)
            assert await c.wait_for(lambda: bool(c.assistant.transcripts) and c.assistant.transcripts[-1].strip())
            assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies))
    finally:
        vosk.stop()


async def test_vosk_paused_then_resumed(sidecar_logs: Path, piper: SidecarProcess, llama: SidecarProcess,
                                        call_control: RecordingCallControl) -> None:
    """A paused Vosk (SIGSTOP) is noticed at the end of the question: apology, logged with the call
    id; once it resumes (SIGCONT) the old question is never answered and the next one is."""
    import os
    import signal

    import structlog

    vosk = vosk_process(sidecar_logs)
    vosk.start()
    assert vosk.proc is not None
    pid = vosk.proc.pid
    s = AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=30)  # type: ignore[arg-type]
    try:
        async with Call(s, call_control, apology=render_apology(s.apology_text)) as c:
            assert await c.wait_for(lambda: c.assistant.stt.connected)
            os.kill(pid, signal.SIGSTOP)
            with structlog.testing.capture_logs() as logs:
                await ask(c)
                assert await c.wait_for(lambda: c.assistant.apologies_played == 1)
            assert any("stalled" in e for e in c.assistant.errors), c.assistant.errors
            assert any(e["event"] == "stt stalled" and e.get("call_id") == c.assistant.call_id for e in logs)
            os.kill(pid, signal.SIGCONT)
            assert await c.wait_for(lambda: c.assistant.stt.connected)
            await ask(c)
            assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies))
            # one question reached the LLM: the one asked after the server came back
            assert len([t for t in c.assistant.transcripts if t.strip()]) == 1, c.assistant.transcripts
    finally:
        os.kill(pid, signal.SIGCONT)
        vosk.stop()
