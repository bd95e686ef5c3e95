"""The Piper TTS WebSocket server, tested over real WebSockets with the real en_US-joe-medium voice."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.slow

SHORT = "Hello, thank you for calling. How can I help you today?"
LONG = " ".join(
    f"This is sentence number {n}, and it carries a few more words so that it takes a while to speak."
    for n in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
)


@dataclass
class Utterance:
    id: Any
    audio: bytearray = field(default_factory=bytearray)
    frames: int = 0
    reason: str | None = None


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.recv(), 120)
    assert isinstance(msg, str), "expected a JSON message, got a binary frame"
    obj: dict[str, Any] = json.loads(msg)
    return obj


async def ready(ws: ClientConnection) -> int:
    hello = await recv_json(ws)
    assert hello["type"] == "ready"
    return int(hello["sample_rate"])


async def collect(ws: ClientConnection, count: int, errors: list[dict[str, Any]] | None = None) -> list[Utterance]:
    """Read ``count`` whole utterances, checking the framing: audio only between start and end."""
    done: list[Utterance] = []
    current: Utterance | None = None
    while len(done) < count:
        msg = await asyncio.wait_for(ws.recv(), 120)
        if isinstance(msg, bytes):
            assert current is not None, "binary frame outside audio_start/audio_end"
            assert len(msg) % 2 == 0
            current.audio += msg
            current.frames += 1
            continue
        obj = json.loads(msg)
        if obj["type"] == "audio_start":
            assert current is None, "audio_start inside another utterance"
            current = Utterance(obj["id"])
        elif obj["type"] == "audio_end":
            assert current is not None and obj["id"] == current.id
            current.reason = obj["reason"]
            done.append(current)
            current = None
        elif obj["type"] == "error" and errors is not None:
            errors.append(obj)
        else:
            raise AssertionError(f"unexpected message {obj}")
    return done


async def test_ready_announces_the_voice_rate_and_audio_has_the_right_length(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        rate = await ready(ws)
        assert rate == 22050
        await ws.send(json.dumps({"type": "speak", "id": "u1", "text": SHORT}))
        [utt] = await collect(ws, 1)
    assert utt.id == "u1" and utt.reason == "done"
    seconds = len(utt.audio) / 2 / rate
    # ~11 words: a couple of seconds at a normal speaking rate, at this rate; never 8 kHz or 44.1 kHz sized.
    assert 1.5 < seconds < 8.0, seconds
    assert max(abs(int.from_bytes(utt.audio[i : i + 2], "little", signed=True))
               for i in range(0, len(utt.audio), 2)) > 1000
    # Sentence audio is cut into frames of at most 100 ms.
    assert utt.frames >= 2 and utt.frames * 4410 >= len(utt.audio)


async def test_an_utterance_starts_with_its_first_sound_not_with_pipers_quiet(piper_url: str) -> None:
    """Piper opens each pass with 25-35 ms of near-silence: before the first sound of an utterance
    it is only delay on the caller's clock, so at most one 5 ms block of it is sent."""
    async with connect(piper_url) as ws:
        rate = await ready(ws)
        await ws.send(json.dumps({"type": "speak", "id": "q", "text": "Hello, how can I help?"}))
        [utt] = await collect(ws, 1)
    samples = memoryview(bytes(utt.audio)).cast("h")
    onset = next(i for i, v in enumerate(samples) if abs(v) >= 64)
    assert onset < 2 * rate * 5 // 1000, onset


async def test_one_start_end_pair_per_utterance_in_order(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        for uid, text in (("a", "Good morning."), (7, "Your balance is ten dollars."), ("c", "Goodbye.")):
            await ws.send(json.dumps({"type": "speak", "id": uid, "text": text}))
        utts = await collect(ws, 3)
    assert [u.id for u in utts] == ["a", 7, "c"]
    assert all(u.reason == "done" and u.audio for u in utts)
    assert len(utts[1].audio) > len(utts[2].audio)


async def test_text_accumulates_until_a_sentence_end_or_flush(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "id": "s", "text": "Your order has ", "flush": False}))
        await ws.send(json.dumps({"type": "speak", "id": "s", "text": "shipped. It will arr", "flush": False}))
        assert (await recv_json(ws)) == {"type": "audio_start", "id": "s"}
        # The complete first sentence is spoken before the utterance is flushed.
        first = await asyncio.wait_for(ws.recv(), 120)
        assert isinstance(first, bytes)
        await ws.send(json.dumps({"type": "speak", "id": "s", "text": "ive tomorrow.", "flush": True}))
        audio, end = bytearray(first), None
        while end is None:
            msg = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(msg, bytes):
                audio += msg
            else:
                end = json.loads(msg)
    assert end == {"type": "audio_end", "id": "s", "reason": "done"}
    assert len(audio) / 2 / 22050 > 2.0  # both sentences, the second completed by the flush


async def full_length(ws: ClientConnection, uid: str, text: str) -> int:
    await ws.send(json.dumps({"type": "speak", "id": uid, "text": text}))
    [utt] = await collect(ws, 1)
    assert utt.reason == "done"
    return len(utt.audio)


async def test_cancel_after_the_first_chunk_stops_early(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        full = await full_length(ws, "full", LONG)
        await ws.send(json.dumps({"type": "speak", "id": "long", "text": LONG}))
        assert (await recv_json(ws))["type"] == "audio_start"
        received = len(await asyncio.wait_for(ws.recv(), 120))
        await ws.send(json.dumps({"type": "cancel", "id": "long"}))
        end = None
        while end is None:
            msg = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(msg, bytes):
                received += len(msg)
            else:
                end = json.loads(msg)
        assert end == {"type": "audio_end", "id": "long", "reason": "cancelled"}
        # Ten sentences were asked for; at most about the sentences in flight were sent.
        assert received < 0.7 * full, (received, full)
        # The connection carries on with the next utterance.
        await ws.send(json.dumps({"type": "speak", "id": "next", "text": "Still here."}))
        [nxt] = await collect(ws, 1)
        assert nxt.id == "next" and nxt.reason == "done" and nxt.audio


async def test_cancel_also_ends_queued_utterances_with_that_id(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "id": "x", "text": LONG}))
        await ws.send(json.dumps({"type": "speak", "id": "y", "text": "Please hold."}))
        await ws.send(json.dumps({"type": "speak", "id": "x", "text": "This was queued."}))
        await ws.send(json.dumps({"type": "cancel", "id": "x"}))
        utts = await collect(ws, 3)
    assert [(u.id, u.reason) for u in utts] == [("x", "cancelled"), ("y", "done"), ("x", "cancelled")]
    assert utts[1].audio and not utts[2].audio


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        '{"type": "shout", "id": "a", "text": "hi"}',
        '{"type": "speak", "text": "no id"}',
        '{"type": "speak", "id": "a", "text": 5}',
        '{"type": "speak", "id": "a", "text": "hi", "flush": "yes"}',
        '{"type": "cancel", "id": true}',
        b"\x00\x01",
        '{"type":"speak","id":"\\ud800","text":"hi"}',  # a lone surrogate escape: valid JSON, not UTF-8-able
        '{"type":"speak","id":"a","text":"hi \\udc00"}',
        '{"type":"speak","id":' + "9" * 30 + ',"text":"hi"}',
        '{"type":"speak","id":"a","text":"hi","flush":NaN}',
        "[" * 100000,  # deeper than the JSON parser's stack
    ],
)
async def test_malformed_message_gets_an_error_and_the_connection_stays_usable(
    piper_url: str, bad: str | bytes
) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(bad)
        err = await recv_json(ws)
        assert err["type"] == "error" and isinstance(err["message"], str) and err["message"]
        await ws.send(json.dumps({"type": "speak", "id": "ok", "text": "Fine."}))
        [utt] = await collect(ws, 1)
        assert utt.reason == "done" and utt.audio


async def test_control_characters_in_text_are_not_spoken_and_do_not_fail_it(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "id": "c", "text": "Hello\u0000 there,\u0007 friend."}))
        [utt] = await collect(ws, 1)  # an error message here would fail collect()
    assert utt.reason == "done" and utt.audio


async def test_a_text_frame_that_is_not_utf8_is_closed_1007(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(b'{"type":"speak","id":"\xff","text":"hi"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


async def test_text_beyond_the_utterance_limit_is_refused_and_the_connection_goes_on(piper_url: str) -> None:
    """At most 2**20 characters wait per utterance: what would exceed that is refused, not hoarded."""
    chunk = run_on(600_000)
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "id": "big", "text": chunk, "flush": False}))
        await ws.send(json.dumps({"type": "speak", "id": "big", "text": chunk, "flush": False}))
        await ws.send(json.dumps({"type": "cancel", "id": "big"}))
        await ws.send(json.dumps({"type": "speak", "id": "next", "text": "Still here."}))
        errors: list[dict[str, Any]] = []
        utts = await collect(ws, 2, errors)
    assert [(u.id, u.reason) for u in utts] == [("big", "cancelled"), ("next", "done")]
    assert len(errors) == 1 and errors[0]["id"] == "big" and "characters" in errors[0]["message"]
    assert utts[1].audio


async def test_a_message_over_1_mib_closes_1009(piper_url: str) -> None:
    async with connect(piper_url, max_size=None) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "id": "huge", "text": "x" * 2**20}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_cancel_of_an_unknown_id_is_harmless(piper_url: str) -> None:
    async with connect(piper_url) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "cancel", "id": "never"}))
        await ws.send(json.dumps({"type": "speak", "id": "z", "text": "Okay."}))
        [utt] = await collect(ws, 1)
        assert utt.id == "z" and utt.reason == "done"


async def test_two_connections_are_served_at_once(piper_url: str) -> None:
    async def one(uid: str, text: str) -> Utterance:
        async with connect(piper_url) as ws:
            await ready(ws)
            await ws.send(json.dumps({"type": "speak", "id": uid, "text": text}))
            [utt] = await collect(ws, 1)
            return utt

    a, b = await asyncio.gather(one("a", SHORT), one("b", "Yes."))
    assert a.id == "a" and b.id == "b" and a.reason == b.reason == "done"
    assert len(a.audio) > 2 * len(b.audio)


def run_on(chars: int) -> str:
    """What an LLM can produce: clause after clause, never a sentence end."""
    words = ("the caller asked about the order and the delivery window and the refund policy, "
             "then about the store hours on public holidays and whether someone could call back tomorrow ")
    return (words * (chars // len(words) + 1))[:chars].rstrip(" ,")


async def test_run_on_text_is_spoken_before_it_is_flushed(piper_url: str) -> None:
    """Streamed text without a sentence end gets audio after one bounded segment, not at the flush."""
    async with connect(piper_url) as ws:
        await ready(ws)
        for i in range(0, 3000, 20):  # token by token, as an LLM client streams
            await ws.send(json.dumps({"type": "speak", "id": "r", "text": run_on(3000)[i : i + 20], "flush": False}))
        assert (await recv_json(ws)) == {"type": "audio_start", "id": "r"}
        first = await asyncio.wait_for(ws.recv(), 60)  # the old server waited for a flush that never came
        assert isinstance(first, bytes) and first
        await ws.send(json.dumps({"type": "cancel", "id": "r"}))
        while isinstance(msg := await asyncio.wait_for(ws.recv(), 60), bytes):
            pass
        assert json.loads(msg) == {"type": "audio_end", "id": "r", "reason": "cancelled"}


def _sample_peak(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        stop.wait(0.02)


NUMBERS = "123456789 " * 200  # read out in words: 10 characters, ~70 phonemes


@pytest.mark.parametrize("text", [run_on(2000), NUMBERS], ids=["run-on", "numbers"])
async def test_run_on_text_synthesizes_in_bounded_memory(piper_process: tuple[str, int], text: str) -> None:
    """2 KB without a full stop: the old server grew by gigabytes (+1.6 GB) before its first audio.

    Numbers expand when read out: 200 characters of them once made one pass of +1.2 GB.
    """
    url, pid = piper_process
    async with connect(url) as ws:
        await ready(ws)
        await full_length(ws, "warm", SHORT + " " + run_on(250))  # ONNX Runtime's arena for a full segment
        base = psutil.Process(pid).memory_info().rss
        stop, peak = threading.Event(), [base]
        sampler = threading.Thread(target=_sample_peak, args=(pid, stop, peak), daemon=True)
        sampler.start()
        try:
            await ws.send(json.dumps({"type": "speak", "id": "long", "text": text}))
            assert (await recv_json(ws)) == {"type": "audio_start", "id": "long"}
            audio = 0
            while audio < 30 * 22050 * 2:  # a few segments' worth, then the caller barges in
                msg = await asyncio.wait_for(ws.recv(), 300)
                assert isinstance(msg, bytes)
                audio += len(msg)
            await ws.send(json.dumps({"type": "cancel", "id": "long"}))
            while isinstance(msg := await asyncio.wait_for(ws.recv(), 60), bytes):
                pass
            assert json.loads(msg)["reason"] == "cancelled"
        finally:
            stop.set()
            sampler.join()
    grown = (peak[0] - base) / 2**20
    assert grown < 500, f"RSS grew by {grown:.0f} MiB"  # one pass: ~200 MiB, twice that if the arena doubles
