"""VoskSTTService against the project's real vosk-server (Korean model, espeak-ng caller speech)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Harness
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from sidecar_procs import SidecarProcess, vosk_process

from ivrbot.services.vosk_stt import VoskSTTService
from ivrbot.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

SPOKEN = "안녕하세요. 감사합니다."


def audio_frames(pcm: bytes, rate: int = 16000, ms: int = 20) -> list[InputAudioRawFrame]:
    step = rate * ms // 1000 * 2
    return [InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=1)
            for i in range(0, len(pcm) - step + 1, step)]


async def speak_and_stop(h: Harness, pcm: bytes) -> None:
    """Audio as the transport delivers it, then the VAD's stop once the audio has gone through."""
    frames = audio_frames(pcm)
    before = len(h.down.of(InputAudioRawFrame))
    await h.send(VADUserStartedSpeakingFrame(start_secs=0.15), *frames)
    assert await h.wait_for(lambda: len(h.down.of(InputAudioRawFrame)) >= before + len(frames))
    await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))


def finals(h: Harness) -> list[TranscriptionFrame]:
    return [t for t in h.down.of(TranscriptionFrame) if t.finalized]


async def test_speech_gives_partials_and_vad_stop_gives_the_final(vosk: SidecarProcess) -> None:
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        # No trailing silence: Kaldi's endpointing cannot have produced this final, the reset did.
        await speak_and_stop(h, caller_speech(SPOKEN))
        assert await h.wait_for(lambda: bool(finals(h)))
        text = finals(h)[0].text
        assert text.strip()
        assert set(text.replace(" ", "")) & set(SPOKEN), text
        assert h.down.of(InterimTranscriptionFrame), "partials should arrive while the caller speaks"
        assert stt.dropped_audio_bytes == 0


async def test_silence_gives_no_transcription(vosk: SidecarProcess) -> None:
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await speak_and_stop(h, silence(1.0))
        # The reset is answered (an empty final): wait until nothing is outstanding.
        assert await h.wait_for(lambda: not stt._sent)
        assert h.down.of(TranscriptionFrame) == []


async def test_session_survives_two_utterances(vosk: SidecarProcess) -> None:
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        for n in (1, 2):
            await speak_and_stop(h, caller_speech(SPOKEN))
            assert await h.wait_for(lambda n=n: len(finals(h)) >= n)


async def test_reconnects_after_the_server_dies(sidecar_logs: Path) -> None:
    server = vosk_process(sidecar_logs)
    server.start()
    try:
        stt = VoskSTTService(url=f"ws://127.0.0.1:{server.port}", reconnect_max_wait=0.5)
        async with Harness(stt) as h:
            assert await stt.wait_connected(30)
            await server.astop()
            # The drop is reported upstream once, as a recoverable error, and the call goes on.
            assert await h.wait_for(lambda: bool(h.up.of(ErrorFrame)))
            assert stt.is_usable
            # Audio while it is down is dropped and counted, not queued without bound.
            await h.send(*audio_frames(silence(0.2)))
            assert await h.wait_for(lambda: stt.dropped_audio_bytes > 0)
            await server.astart()
            assert await h.wait_for(lambda: stt.connected, timeout=60)
            assert stt.reconnects >= 1
            await speak_and_stop(h, caller_speech(SPOKEN))
            assert await h.wait_for(lambda: bool(finals(h)))
    finally:
        server.stop()


async def test_graceful_end_sends_eof_without_reporting_an_outage(vosk: SidecarProcess) -> None:
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await h.send(*audio_frames(silence(0.2)))
        await h.worker.stop_when_done()
        assert await h.wait_for(lambda: h.worker.has_finished())
        assert h.up.of(ErrorFrame) == [] and stt.outages == 0
