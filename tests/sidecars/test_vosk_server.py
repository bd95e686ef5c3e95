"""The vosk-server compatible ASR server, tested over real WebSockets against the real Korean model.

espeak-ng's Korean is only partly recognized (DESIGN section 6); decoding is deterministic, so the
assertions are about what is robust: non-empty transcripts, syllable overlap with what was spoken
(and more overlap than with another phrase), empty finals for silence.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from ivrbot_sidecars.vosk_server import VoskServer
from ivrbot_tools.speech_samples import caller_speech, silence

pytestmark = pytest.mark.slow

CONFIG = json.dumps({"config": {"sample_rate": 16000, "words": 1}})
CONFIG_NO_WORDS = json.dumps({"config": {"sample_rate": 16000, "words": 0}})  # what the bot sends
EOF_MSG = '{"eof" : 1}'
RESET_MSG = '{"reset" : 1}'
CHUNK = 3200  # 100 ms at 16 kHz
HELLO, NO = "여보세요", "아니요"


def hangul(text: str) -> set[str]:
    return {c for c in text if "\uac00" <= c <= "\ud7a3"}


def overlap(spoken: str, heard: str) -> float:
    """Share of the spoken syllables that the transcript contains."""
    return len(hangul(spoken) & hangul(heard)) / len(hangul(spoken))


def speech(text: str) -> bytes:
    return caller_speech(text) + silence(0.5)


async def stream(ws: ClientConnection, pcm: bytes) -> list[dict[str, Any]]:
    """Send ``pcm`` in 100 ms frames, reading the one reply each frame gets."""
    replies = []
    for i in range(0, len(pcm), CHUNK):
        await ws.send(pcm[i : i + CHUNK])
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    return replies


async def transcribe(url: str, pcm: bytes, config: str = CONFIG) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(replies to the audio frames, the final answered to eof); asserts the server then closes 1000."""
    async with connect(url) as ws:
        await ws.send(config)
        replies = await stream(ws, pcm)
        await ws.send(EOF_MSG)
        final = json.loads(await asyncio.wait_for(ws.recv(), 60))
        with pytest.raises(ConnectionClosedOK) as closed:
            await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    return replies, final


async def wait_until(pred: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``pred``; the timeout only bounds a hung test."""
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > end:
            return False
        await asyncio.sleep(0.05)
    return True


def full_text(replies: list[dict[str, Any]], final: dict[str, Any]) -> str:
    return " ".join(r["text"] for r in [*replies, final] if r.get("text"))


async def test_speech_is_transcribed_with_words(vosk_url: str) -> None:
    for phrase in (HELLO, NO):
        replies, final = await transcribe(vosk_url, speech(phrase))
        heard = full_text(replies, final)
        assert heard, f"empty transcript for {phrase}"
        # Syllables of a random Korean transcript rarely hit a 3-4 syllable phrase; these hit most of it.
        assert overlap(phrase, heard) >= 0.5, (phrase, heard)
        words = [w for r in [*replies, final] for w in r.get("result", [])]
        assert words and all({"word", "start", "end", "conf"} <= w.keys() for w in words)


async def test_every_frame_gets_one_reply_and_partials_come_before_the_final(vosk_url: str) -> None:
    pcm = speech(HELLO)
    replies, final = await transcribe(vosk_url, pcm)
    assert len(replies) == -(-len(pcm) // CHUNK)
    assert all(("partial" in r) != ("text" in r) for r in replies)
    first_final = next((i for i, r in enumerate(replies) if "text" in r), len(replies))
    assert any(r.get("partial") for r in replies[:first_final]), "no non-empty partial before the final"
    assert "text" in final


async def test_silence_gives_an_empty_final(vosk_url: str) -> None:
    replies, final = await transcribe(vosk_url, silence(1.5))
    assert final == {"text": ""}
    assert all(not r.get("partial") and not r.get("text") for r in replies)


async def test_replies_are_the_recognizer_output_byte_for_byte(vosk_server: VoskServer, vosk_url: str) -> None:
    """What upstream's process_chunk would send: KaldiRecognizer's strings verbatim."""
    from vosk import KaldiRecognizer

    pcm = speech(NO)
    rec = KaldiRecognizer(vosk_server.model, 16000.0)
    rec.SetWords(True)
    rec.SetMaxAlternatives(0)
    expected = []
    for i in range(0, len(pcm), CHUNK):
        expected.append(rec.Result() if rec.AcceptWaveform(pcm[i : i + CHUNK]) else rec.PartialResult())
    expected.append(rec.FinalResult())
    got = []
    async with connect(vosk_url) as ws:
        await ws.send(CONFIG)
        for i in range(0, len(pcm), CHUNK):
            await ws.send(pcm[i : i + CHUNK])
            got.append(await ws.recv())
        await ws.send(EOF_MSG)
        got.append(await ws.recv())
    assert got == expected


async def test_reset_returns_the_final_and_keeps_the_session(vosk_url: str) -> None:
    async with connect(vosk_url) as ws:
        await ws.send(CONFIG)
        before = await stream(ws, speech(HELLO))
        await ws.send(RESET_MSG)
        first = json.loads(await ws.recv())
        assert "text" in first
        assert overlap(HELLO, full_text(before, first)) >= 0.5
        # The session is still open and starts afresh: silence after the reset yields nothing.
        after = await stream(ws, silence(1.0))
        assert all(not r.get("partial") and not r.get("text") for r in after)
        await ws.send(RESET_MSG)
        assert json.loads(await ws.recv()) == {"text": ""}
        # ...and recognizes the next utterance.
        replies = await stream(ws, speech(NO))
        await ws.send(EOF_MSG)
        final = json.loads(await ws.recv())
        assert overlap(NO, full_text(replies, final)) >= 0.5


async def test_two_sessions_at_once_do_not_mix(vosk_url: str) -> None:
    a, b, quiet = await asyncio.gather(
        transcribe(vosk_url, speech(HELLO)), transcribe(vosk_url, speech(NO)), transcribe(vosk_url, silence(2.0))
    )
    heard_a, heard_b = full_text(*a), full_text(*b)
    assert overlap(HELLO, heard_a) > overlap(NO, heard_a), heard_a
    assert overlap(NO, heard_b) > overlap(HELLO, heard_b), heard_b
    assert full_text(*quiet) == ""


@pytest.mark.parametrize(
    "bad",
    [
        "hello",  # not JSON
        '{"config": {"sample_rate": "fast"}}',
        '{"config": {"sample_rate": -5}}',
        '{"config": "16000"}',
        '{"eof": 2}',
        "[1, 2]",
        '{"config": {"sample_rate": 7999.5}}',  # Kaldi's resampler would abort the process
        '{"config": {"sample_rate": "7999.5"}}',
        '{"config": {"sample_rate": 4000}}',
        '{"config": {"words": 7}}',
        '{"config": {"phrase_list": ["\\ud800"]}}',  # a lone surrogate escape, valid JSON
        "[" * 100000,  # deeper than the JSON parser's stack
    ],
)
async def test_malformed_text_frame_gets_an_error_and_a_clean_close(vosk_url: str, bad: str) -> None:
    async with connect(vosk_url) as other:
        await other.send(CONFIG)
        async with connect(vosk_url) as ws:
            await ws.send(bad)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert isinstance(reply.get("error"), str) and reply["error"]
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # A session opened before keeps working, and so does a new one.
        replies = await stream(other, silence(0.3))
        assert all("partial" in r for r in replies)
    _, final = await transcribe(vosk_url, silence(0.3))
    assert final == {"text": ""}


async def test_an_odd_length_frame_keeps_sample_alignment(vosk_url: str) -> None:
    """Half a sample at the end of one frame is completed by the next, so audio is not garbled."""
    pcm = speech(HELLO)
    async with connect(vosk_url) as ws:
        await ws.send(CONFIG)
        replies = []
        for i in range(0, len(pcm), 3201):
            await ws.send(pcm[i : i + 3201])
            replies.append(json.loads(await ws.recv()))
        await ws.send(EOF_MSG)
        final = json.loads(await ws.recv())
    assert overlap(HELLO, full_text(replies, final)) >= 0.5


async def test_a_config_kaldi_cannot_take_is_refused_while_other_calls_go_on(
    vosk_process: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """``sample_rate: 7999.5`` once aborted the whole server, and ASR with it, for every live call."""
    url, proc = vosk_process
    pcm = speech(HELLO)
    half = len(pcm) // 2 // CHUNK * CHUNK
    async with connect(url) as live:
        await live.send(CONFIG)
        before = await stream(live, pcm[:half])
        for bad in ({"sample_rate": 7999.5}, {"sample_rate": "8000.5"}, {"sample_rate": 96000},
                    {"max_alternatives": 1.5}, {"words": "yes"}):
            async with connect(url) as ws:
                await ws.send(json.dumps({"config": bad}))
                await ws.send(speech(NO)[:CHUNK])  # the first audio builds the recognizer
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert reply.get("error", "").startswith("config."), (bad, reply)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        after = await stream(live, pcm[half:])
        await live.send(EOF_MSG)
        final = json.loads(await asyncio.wait_for(live.recv(), 60))
    assert proc.poll() is None
    assert overlap(HELLO, full_text([*before, *after], final)) >= 0.5


async def test_string_sample_rate_is_accepted_as_upstream_does(vosk_url: str) -> None:
    async with connect(vosk_url) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": "16000", "words": 1}}))
        replies = await stream(ws, speech(HELLO))
        await ws.send(EOF_MSG)
        final = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert overlap(HELLO, full_text(replies, final)) >= 0.5


async def test_a_text_frame_that_is_not_utf8_is_closed_1007(vosk_url: str) -> None:
    async with connect(vosk_url) as ws:
        await ws.send(b'{"config": {"sample_rate": \xff}}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    _, final = await transcribe(vosk_url, silence(0.3))
    assert final == {"text": ""}


async def test_sessions_get_warm_recognizers_that_decode_as_fresh_ones(vosk_server: VoskServer, vosk_url: str) -> None:
    """A new recognizer costs ~1.2 s of CPU on its first half second of audio; the server builds them at
    start and hands a finished session's recognizer to the next one, which must decode exactly as a new
    one would, also after a session that was cut off mid-utterance."""
    pool = vosk_server.recognizers
    assert pool is not None and pool.idle >= 1, "recognizers are built before the server listens"
    created = pool.created
    first = await transcribe(vosk_url, speech(HELLO), config=CONFIG_NO_WORDS)
    idle = pool.idle
    async with connect(vosk_url) as ws:  # cut off half way: no eof, no final
        await ws.send(CONFIG_NO_WORDS)
        await stream(ws, speech(NO)[: len(speech(NO)) // 2])
    # back in the pool, on top: the next session gets this very recognizer
    assert await wait_until(lambda: pool.idle == idle)
    second = await transcribe(vosk_url, speech(HELLO), config=CONFIG_NO_WORDS)
    assert pool.created == created, "no session paid for building a recognizer"
    assert first == second, "nothing of an earlier session carries over"
    assert overlap(HELLO, full_text(*first)) >= 0.5


async def test_three_sessions_on_two_workers_all_decode_while_the_others_are_open(
    vosk_server: VoskServer, vosk_url: str
) -> None:
    """Workers are taken per message, not per session: a third caller on a two-worker server gets
    partials while the first two are still open and talking; and three calls at once build no
    recognizer (the server keeps four warm)."""
    pool = vosk_server.recognizers
    assert pool is not None
    created = pool.created
    pcm = speech(HELLO)
    conns = [await connect(vosk_url) for _ in range(3)]
    try:
        for ws in conns:
            await ws.send(CONFIG_NO_WORDS)
        results = await asyncio.gather(*(stream(ws, pcm) for ws in conns))
        for replies in results:
            assert any(r.get("partial") or r.get("text") for r in replies), replies
    finally:
        for ws in conns:
            await ws.close()
    assert pool.created == created


def test_a_recognizer_that_decoded_its_share_of_audio_is_let_go(vosk_server: VoskServer) -> None:
    """The graph a recognizer expands grows with what it decodes, so reuse is bounded by audio decoded."""
    from ivrbot_sidecars.vosk_server import RecognizerConfig, RecognizerPool

    pool = RecognizerPool(vosk_server.model, keep=2, retire_after_s=2.0)
    config = RecognizerConfig(16000.0, words=False)
    rec, decoded = pool.take(config)
    assert (pool.created, decoded) == (1, 0.0)
    pool.give(config, rec, 1.5)
    again, decoded = pool.take(config)
    assert again is rec and decoded == 1.5 and pool.reused == 1
    pool.give(config, again, 2.5)
    assert pool.retired == 1 and pool.idle == 0
    fresh, decoded = pool.take(config)
    assert fresh is not rec and decoded == 0.0 and pool.created == 2
    # word times count from a recognizer's first audio: such sessions neither take nor leave one
    words = RecognizerConfig(16000.0, words=True)
    pool.give(config, fresh, 0.0)
    own, _ = pool.take(words)
    assert own is not fresh and pool.created == 3
    pool.give(words, own, 0.0)
    assert pool.idle == 1
