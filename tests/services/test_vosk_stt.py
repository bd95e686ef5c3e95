"""VoskSTTService against the project's real vosk-server (Korean model, espeak-ng caller speech)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import structlog
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

from ivrbot.pause_signal import UserPausedFrame, UserResumedFrame
from ivrbot.services.vosk_stt import PAUSE_FINAL, VOSK_RESET, VoskSTTService
from ivrbot_tools.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

SPOKEN = "안녕하세요. 감사합니다."
#: how far behind the speech onset the VAD's start reaches the STT (measured: docs/media.md)
VAD_START_LAG_S = 0.26


def hangul(text: str) -> set[str]:
    return {c for c in text if "\uac00" <= c <= "\ud7a3"}


def overlap(spoken: str, heard: str) -> float:
    """Share of the spoken syllables that the transcript contains."""
    return len(hangul(spoken) & hangul(heard)) / len(hangul(spoken))


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
            # Speech while it is down is dropped and counted, not queued without bound.
            await h.send(VADUserStartedSpeakingFrame(start_secs=0.15), *audio_frames(caller_speech(SPOKEN)))
            assert await h.wait_for(lambda: stt.dropped_audio_bytes > 0)
            await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
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


async def paced(h: Harness, pcm: bytes) -> None:
    """Frames at the transport's pace (20 ms each), so upstream VAD frames interleave as in a call."""
    for f in audio_frames(pcm):
        await h.send(f)
        await asyncio.sleep(0.02)


async def test_only_speech_reaches_vosk_and_a_late_vad_start_loses_no_syllable(vosk: SidecarProcess) -> None:
    """A caller silent for 3 s, speaking, silent again: the server gets the speech (the pre-roll holds
    the onset the VAD confirmed late) and none of the silence; the transcript is as good as with
    every byte sent from the onset."""
    speech = caller_speech(SPOKEN)
    lag = int(VAD_START_LAG_S * 16000) * 2
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await paced(h, silence(3.0))
        assert stt.sent_audio_bytes == 0, "nothing is sent while the caller is silent"
        # the VAD's start arrives VAD_START_LAG_S into the speech, its stop 0.3 s after it
        await paced(h, speech[:lag])
        await h.send(VADUserStartedSpeakingFrame(start_secs=0.15))
        await paced(h, speech[lag:] + silence(0.3))
        await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
        assert await h.wait_for(lambda: bool(finals(h)))
        gated = finals(h)[0].text
        await paced(h, silence(3.0))
        sent = stt.sent_audio_bytes
        assert sent <= len(speech) + len(silence(0.3)) + 2 * 16 * stt._preroll_ms + 2 * 16 * 40
        assert stt.gate.bytes_skipped >= len(silence(5.0)), "the silence never went out"
        assert stt.dropped_audio_bytes == 0

    baseline = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(baseline) as h:
        assert await baseline.wait_connected(30)
        await speak_and_stop(h, speech + silence(0.3))
        assert await h.wait_for(lambda: bool(finals(h)))
        full = finals(h)[0].text
    assert overlap(SPOKEN, gated) > 0, (gated, full)
    # the onset the VAD confirmed late is in the pre-roll: the transcripts start alike
    assert gated.replace(" ", "")[:2] == full.replace(" ", "")[:2], (gated, full)
    assert overlap(SPOKEN, gated) >= overlap(SPOKEN, full) - 0.15, (gated, full)


async def test_a_paused_server_is_a_stall_stale_results_are_dropped_and_it_recovers(sidecar_logs: Path) -> None:
    """SIGSTOP the real server: the finalize goes unanswered, the utterance is reported lost within
    the bound (the assistant apologises), and after SIGCONT the old transcript never turns up while
    a new utterance is transcribed on a fresh session."""
    server = vosk_process(sidecar_logs)
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        stt = VoskSTTService(url=f"ws://127.0.0.1:{server.port}", call_id="stall-call", open_timeout=1.0,
                             reconnect_max_wait=0.5)
        async with Harness(stt) as h:
            assert await stt.wait_connected(30)
            os.kill(pid, signal.SIGSTOP)
            with structlog.testing.capture_logs() as logs:
                await speak_and_stop(h, caller_speech(SPOKEN))
                assert await h.wait_for(lambda: bool(h.up.of(ErrorFrame)), timeout=30)
            assert stt.stalls == 1 and not stt.connected
            assert "stalled" in h.up.of(ErrorFrame)[0].error
            assert any(e["event"] == "stt stalled" and e.get("call_id") == "stall-call" for e in logs), logs
            os.kill(pid, signal.SIGCONT)
            assert await h.wait_for(lambda: stt.connected, timeout=60)
            await speak_and_stop(h, caller_speech(SPOKEN))
            assert await h.wait_for(lambda: bool(finals(h)))
            # the paused session's transcript would have come first: it never does
            assert await h.settle(lambda: len(h.down.of(TranscriptionFrame)), quiet=1.0) == 1
            assert stt.stalls == 1 and len(h.up.of(ErrorFrame)) == 1
    finally:
        if server.proc is not None:
            os.kill(pid, signal.SIGCONT)
        server.stop()


class HeldProxy:
    """A loopback TCP proxy to ``port`` that accepts connections but forwards nothing until ``release()``:
    a WebSocket handshake through it completes only then (a server slow to accept, a busy event loop)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HeldProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        self.released.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.released.wait()
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        for t in (asyncio.create_task(pipe(reader, up_w)), asyncio.create_task(pipe(up_r, writer))):
            self._tasks.add(t)


async def test_speech_before_the_first_connection_is_held_and_transcribed_whole(vosk: SidecarProcess) -> None:
    """A caller who talks from the first packet, while the call's Vosk session is not up yet: the
    speech is held, not dropped, and the final is as good as on a session that was up."""
    speech = caller_speech(SPOKEN)
    async with HeldProxy(vosk.port) as proxy:
        stt = VoskSTTService(url=f"ws://127.0.0.1:{proxy.port}", open_timeout=30)
        async with Harness(stt) as h:
            frames = audio_frames(speech)
            await h.send(VADUserStartedSpeakingFrame(start_secs=0.15), *frames)
            assert await h.wait_for(lambda: len(h.down.of(InputAudioRawFrame)) >= len(frames))
            assert not stt.connected, "the proxy holds the handshake"
            proxy.release()
            await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
            assert await h.wait_for(lambda: bool(finals(h)), timeout=60)
            early = finals(h)[0].text
            assert stt.dropped_audio_bytes == 0
            assert not h.up.of(ErrorFrame), "no outage, no lost utterance"

    baseline = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(baseline) as h:
        assert await baseline.wait_connected(30)
        await speak_and_stop(h, speech)
        assert await h.wait_for(lambda: bool(finals(h)))
        full = finals(h)[0].text
    assert overlap(SPOKEN, early) > 0, (early, full)
    assert overlap(SPOKEN, early) >= overlap(SPOKEN, full) - 0.15, (early, full)
    assert early.replace(" ", "")[:2] == full.replace(" ", "")[:2], (early, full)


FIRST, SECOND = "안녕하세요", "감사합니다"


async def speak(h: Harness, pcm: bytes) -> None:
    """Audio as the transport delivers it, returned once it has gone through the service."""
    frames = audio_frames(pcm)
    before = len(h.down.of(InputAudioRawFrame))
    await h.send(*frames)
    assert await h.wait_for(lambda: len(h.down.of(InputAudioRawFrame)) >= before + len(frames))


async def say_and_pause(h: Harness, text: str) -> TranscriptionFrame:
    """The caller says ``text`` and pauses: the final that answers the pause's finalize."""
    await h.send(VADUserStartedSpeakingFrame(start_secs=0.15))
    await speak(h, caller_speech(text) + silence(0.15))
    await h.send(UserPausedFrame())
    assert await h.wait_for(lambda: bool(finals(h)))
    return finals(h)[-1]


async def test_a_pause_gives_a_pause_final_and_a_silent_stop_an_empty_segment(vosk: SidecarProcess) -> None:
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        # The final of what was said, before any stop, marked as a pause's and finalized.
        pause_final = await say_and_pause(h, SPOKEN)
        assert pause_final.result[PAUSE_FINAL] is True and overlap(SPOKEN, pause_final.text) > 0
        # The caller stays silent until the VAD's stop: that finalize answers an empty segment.
        await speak(h, silence(0.15))
        await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
        assert await h.wait_for(lambda: not stt._sent)
        assert h.down.of(TranscriptionFrame) == [pause_final]
        assert stt.dropped_audio_bytes == 0
        # The session goes on: the next utterance is decoded from the start.
        await speak_and_stop(h, caller_speech(SECOND))
        assert await h.wait_for(lambda: len(finals(h)) == 2)
        assert finals(h)[1].text.strip() and finals(h)[1].result[PAUSE_FINAL] is False


async def test_words_vosk_makes_of_the_pause_silence_are_dropped(vosk: SidecarProcess) -> None:
    """The turn ends on the pause's final at the VAD's stop; a word Vosk then decodes from the audio
    the VAD called silence (line noise, a breath) would start a turn of its own and cut the reply
    off. Here that "silence" is a whole phrase the VAD did not call speech."""
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await say_and_pause(h, FIRST)
        partials = len(h.down.of(InterimTranscriptionFrame))
        await speak(h, caller_speech(SECOND) + silence(0.3))
        await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
        assert await h.wait_for(lambda: not stt._sent)
        assert len(h.down.of(TranscriptionFrame)) == 1 and finals(h)[0].result[PAUSE_FINAL] is True
        assert len(h.down.of(InterimTranscriptionFrame)) == partials
        assert stt.hush_words_dropped == 1
        # A resumed caller's words are not silence: the next utterance is transcribed as usual.
        await speak_and_stop(h, caller_speech(SECOND))
        assert await h.wait_for(lambda: len(finals(h)) == 2)
        assert overlap(SECOND, finals(h)[1].text) > 0


def similarity(a: str, b: str) -> float:
    return len(hangul(a) & hangul(b)) / max(1, len(hangul(a) | hangul(b)))


async def alone(vosk: SidecarProcess, text: str) -> str:
    """What Vosk hears in ``text`` said on its own (espeak's Korean is far from what it was trained on)."""
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await speak_and_stop(h, caller_speech(text) + silence(0.15))
        assert await h.wait_for(lambda: bool(finals(h)))
        return str(finals(h)[0].text)


async def test_resuming_after_a_pause_final_gives_the_rest_as_a_second_final_in_order(vosk: SidecarProcess) -> None:
    heard_first, heard_second = await alone(vosk, FIRST), await alone(vosk, SECOND)
    assert similarity(heard_first, heard_second) < 0.5, (heard_first, heard_second)
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await say_and_pause(h, FIRST)
        await speak(h, silence(0.1))
        await h.send(UserResumedFrame())
        await speak(h, caller_speech(SECOND) + silence(0.3))
        await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
        assert await h.wait_for(lambda: len(finals(h)) == 2)
        first, second = finals(h)
        assert first.result[PAUSE_FINAL] is True and second.result[PAUSE_FINAL] is False
        # each segment holds its own words, in order: the first is not decoded again, the rest not lost
        assert similarity(first.text, heard_first) > similarity(first.text, heard_second), (first.text, heard_first)
        assert similarity(second.text, heard_second) > similarity(second.text, heard_first), (
            second.text, heard_second)


async def test_a_pause_final_overtaken_by_the_resume_does_not_finalize_the_turn(vosk: SidecarProcess) -> None:
    """The caller resumed before the pause's final came: the turn waits for the final of the rest."""
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        await h.send(VADUserStartedSpeakingFrame(start_secs=0.15))
        await speak(h, caller_speech(FIRST) + silence(0.15))
        await h.send(UserPausedFrame(), UserResumedFrame())
        await speak(h, caller_speech(SECOND) + silence(0.3))
        await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.3))
        assert await h.wait_for(lambda: len(h.down.of(TranscriptionFrame)) == 2)
        first, second = h.down.of(TranscriptionFrame)
        # (the resume is handled at once; the server's answer takes it a decode of the buffered audio)
        assert not first.finalized and first.result[PAUSE_FINAL] is False and first.text.strip()
        assert second.finalized and second.text.strip() and second.result[PAUSE_FINAL] is False


async def test_a_final_handled_before_the_reset_send_returns_is_still_finalized(vosk: SidecarProcess) -> None:
    """On a busy loop the receive task can handle Vosk's answer to a reset before the coroutine that
    sent the reset resumes. That final must still be the finalized one: unmarked, the turn strategy
    waits out its STT safety timeout (1.5 s) before the reply starts."""
    stt = VoskSTTService(url=f"ws://127.0.0.1:{vosk.port}")
    async with Harness(stt) as h:
        assert await stt.wait_connected(30)
        ws = stt._websocket
        assert ws is not None
        real_send = ws.send

        async def send_returning_late(message: object, *args: object, **kwargs: object) -> None:
            await real_send(message, *args, **kwargs)  # type: ignore[arg-type]
            if message == VOSK_RESET:  # the answer arrives and is handled before send() returns
                assert await h.wait_for(lambda: not stt._sent, timeout=60)

        ws.send = send_returning_late  # type: ignore[method-assign]
        await speak_and_stop(h, caller_speech(SPOKEN))
        assert await h.wait_for(lambda: bool(h.down.of(TranscriptionFrame)), timeout=60)
        assert finals(h) == h.down.of(TranscriptionFrame), [t.finalized for t in h.down.of(TranscriptionFrame)]
