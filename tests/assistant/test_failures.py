"""A sidecar that is down (or dies) never ends the call: the caller hears the apology, the call goes on,
and the next turn works once the sidecar is back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from call import Call, urls
from conftest import RecordingCallControl
from loopback_transport import LoopbackTransport
from sidecar_procs import SidecarProcess, llama_process, piper_process, vosk_process

from ivrbot.apology import render_apology, tone_apology
from ivrbot.assistant_settings import AssistantSettings
from ivrbot_tools.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

QUESTION = "안녕하세요 오늘 날씨가 어때요"  # one turn: a warm Vosk splits a question at its full stop


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


def tone_secs(transport: LoopbackTransport, since: float = 0.0) -> float:
    """Seconds of output that are the tone apology (pure 440/660 Hz), which speech never is."""
    total = 0.0
    for t, a, rate in transport.audio_out:
        x = np.frombuffer(a[: len(a) // 2 * 2], dtype="<i2").astype(np.float64)
        if t < since or x.size < 64 or float(np.sqrt(np.mean(x * x))) < 300:
            continue
        power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / rate)
        near = sum(power[np.abs(freqs - f) < 60].sum() for f in (440.0, 660.0))
        if near > 0.8 * power.sum():
            total += x.size / rate
    return total


async def test_llama_paused_mid_reply_then_back(sidecar_logs: Path, vosk: SidecarProcess, piper: SidecarProcess,
                                                call_control: RecordingCallControl) -> None:
    """llama-server SIGSTOPped while it streams a reply: the caller hears the apology and the next turn works."""
    llama = llama_process(sidecar_logs)  # its own server: pausing the shared one would stall other tests
    await llama.astart()
    assert llama.proc is not None
    pid = llama.proc.pid
    # The default stall limit (a generous first-token one: the turn after recovery must not trip it on a
    # loaded machine), a prompt that makes a long reply, a tone apology the output can be checked for.
    s = AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=300,  # type: ignore[arg-type]
                          system_prompt="You are a helpful assistant.", llm_first_token_timeout_secs=30.0)
    try:
        async with Call(s, call_control, apology=tone_apology()) as c:
            assert await c.wait_for(lambda: c.assistant.stt.connected)
            await c.assistant.say_as_caller("Write a very long story about a dragon. Use at least 300 words.")
            assert await c.wait_for(lambda: c.assistant.llm.reply_tokens >= 3)
            os.kill(pid, signal.SIGSTOP)
            try:
                assert await c.wait_for(lambda: c.assistant.apologies_played == 1, timeout=30), (
                    c.assistant.llm.reply_tokens, c.assistant.errors)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert any("LlamaLLMService" in e and "stalled" in e for e in c.assistant.errors), c.assistant.errors
            assert await c.wait_for(lambda: tone_secs(c.transport) > 0.3)  # the apology reached the output
            assert not c.finished
            heard = len(c.assistant.transcripts)
            asked = await ask(c)
            assert await c.wait_for(lambda: len(c.assistant.transcripts) > heard)
            replies = len(c.assistant.replies)
            assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies[replies:])
                                    and c.transport.out_voiced_secs(since=asked) > 0.5), (
                c.assistant.transcripts, c.assistant.replies, c.assistant.errors)
            assert c.assistant.llm.stalls == 1, c.assistant.errors
            assert call_control.hangups == []
    finally:
        os.kill(pid, signal.SIGCONT)
        llama.stop()


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
