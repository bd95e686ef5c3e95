"""SpeechGate: what of the caller's audio reaches the recognizer (unit tests of the sans-IO core)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot.services.speech_gate import SpeechGate

FRAME = 640  # 20 ms at 16 kHz, s16le


def frame(n: int) -> bytes:
    """A recognisable 20 ms frame: every sample carries the frame number."""
    return (n % 65536).to_bytes(2, "little") * (FRAME // 2)


def test_silence_sends_nothing_and_keeps_only_the_preroll() -> None:
    gate = SpeechGate(preroll_bytes=5 * FRAME, batch_bytes=5 * FRAME)
    assert all(gate.feed(frame(i)) == b"" for i in range(500))  # 10 s of a silent caller
    assert gate.bytes_out == 0 and gate.buffered == 5 * FRAME
    # the VAD starts: the last 5 frames (the onset it needed time to confirm) go out at once
    assert gate.start() == b"".join(frame(i) for i in range(495, 500))


def test_speech_goes_out_in_batches_and_the_stop_flushes_the_rest() -> None:
    gate = SpeechGate(preroll_bytes=2 * FRAME, batch_bytes=5 * FRAME)
    gate.feed(frame(0))
    assert gate.start() == frame(0)
    out = [gate.feed(frame(i)) for i in range(1, 13)]
    assert [len(b) // FRAME for b in out if b] == [5, 5]
    assert gate.stop() == frame(11) + frame(12)
    assert gate.feed(frame(13)) == b"", "after the stop the caller is silent again"
    assert gate.start() == frame(13)


def test_a_pause_flushes_the_rest_and_keeps_sending() -> None:
    gate = SpeechGate(preroll_bytes=2 * FRAME, batch_bytes=5 * FRAME)
    gate.start()
    for i in range(3):
        gate.feed(frame(i))
    assert gate.flush() == frame(0) + frame(1) + frame(2)
    assert gate.speaking and gate.flush() == b""
    out = [gate.feed(frame(i)) for i in range(3, 8)]
    assert out[-1] == b"".join(frame(i) for i in range(3, 8)), "batches go on after the pause"


def test_start_twice_sends_the_preroll_once() -> None:
    gate = SpeechGate(preroll_bytes=FRAME, batch_bytes=FRAME * 10)
    gate.feed(frame(1))
    assert gate.start() == frame(1)
    assert gate.start() == b""


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        SpeechGate(preroll_bytes=-1, batch_bytes=640)
    with pytest.raises(ValueError):
        SpeechGate(preroll_bytes=640, batch_bytes=0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.integers(1, 3)),  # 1-3 frames at once
        st.tuples(st.just("start"), st.just(0)),
        st.tuples(st.just("stop"), st.just(0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, preroll=st.integers(0, 12), batch=st.integers(1, 8))
def test_output_is_the_input_minus_silence_never_reordered_or_repeated(
    ops: list[tuple[str, int]], preroll: int, batch: int
) -> None:
    """Whatever the VAD does: every frame sent at most once and in order; all speech sent; the
    pre-roll bounded; nothing sent while silent."""
    gate = SpeechGate(preroll_bytes=preroll * FRAME, batch_bytes=batch * FRAME)
    sent = bytearray()
    n = 0
    speaking_frames: list[int] = []
    for op, k in ops:
        if op == "feed":
            for _ in range(k):
                out = gate.feed(frame(n))
                if not gate.speaking:
                    assert out == b"", "nothing goes out while the caller is silent"
                    assert gate.buffered <= preroll * FRAME
                else:
                    speaking_frames.append(n)
                sent += out
                n += 1
        elif op == "start":
            sent += gate.start()
        else:
            sent += gate.stop()
    sent += gate.stop()
    numbers = [int.from_bytes(sent[i : i + 2], "little") for i in range(0, len(sent), FRAME)]
    assert len(sent) % FRAME == 0
    assert numbers == sorted(set(numbers)), "in order, none twice"
    assert set(speaking_frames) <= set(numbers), "every frame fed while speaking is sent"
    assert gate.bytes_in == gate.bytes_out + gate.bytes_skipped + gate.buffered
