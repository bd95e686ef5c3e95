import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot.audio.resample import StreamResampler

PAIRS = [(8000, 16000), (16000, 8000), (22050, 8000), (24000, 8000)]


def chunks(x: np.ndarray, rate: int) -> list[bytes]:
    n = rate // 50
    return [x[i : i + n].astype("<i2").tobytes() for i in range(0, len(x), n)]


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_every_20ms_chunk_returns_20ms_of_audio(src: int, dst: int) -> None:
    r = StreamResampler(src, dst)
    x = (np.random.default_rng(1).standard_normal(src * 2) * 3000).astype(np.int16)
    lengths = [len(r.process(c)) // 2 for c in chunks(x, src)]
    assert all(abs(n - dst // 50) <= 1 for n in lengths), lengths
    assert abs(sum(lengths) - 2 * dst) <= 1


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_delay_is_the_documented_group_delay_a_few_ms(src: int, dst: int) -> None:
    r = StreamResampler(src, dst)
    x = np.zeros(src, dtype=np.int16)
    x[src // 10] = 30000  # impulse at 100 ms
    y = np.frombuffer(b"".join(r.process(c) for c in chunks(x, src)), dtype="<i2")
    delay = np.argmax(np.abs(y)) / dst - 0.1
    assert abs(delay - r.delay_seconds) <= 1.5 / dst
    assert r.delay_seconds < 0.003


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_passband_kept_and_alias_rejected(src: int, dst: int) -> None:
    def gain(freq: float) -> float:
        r = StreamResampler(src, dst)
        t = np.arange(src) / src
        x = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        y = np.frombuffer(b"".join(r.process(c) for c in chunks(x, src)), dtype="<i2")[100:].astype(float)
        return float(np.sqrt(np.mean(y**2)) / (10000 / np.sqrt(2)))

    assert gain(1000) == pytest.approx(1.0, abs=0.01)
    assert gain(3000) == pytest.approx(1.0, abs=0.01)
    if src > dst:
        assert gain(min(src / 2 - 500, 6000)) < 0.01  # would alias into the telephone band


def test_reset_forgets_history() -> None:
    r = StreamResampler(22050, 8000)
    r.process((np.ones(441) * 20000).astype("<i2").tobytes())
    r.reset()
    out = np.frombuffer(r.process(np.zeros(441, dtype="<i2").tobytes()), dtype="<i2")
    assert not out.any()


@settings(max_examples=60, deadline=None)
@given(
    rates=st.sampled_from([(8000, 16000), (16000, 8000), (22050, 8000), (24000, 8000)]),
    pattern=st.lists(st.tuples(st.booleans(), st.integers(1, 700)), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_silence_shortcut_gives_what_the_filter_gives(
    rates: tuple[int, int], pattern: list[tuple[bool, int]], seed: int
) -> None:
    """Runs of digital silence between speech (and a filter still ringing after speech) come out
    exactly as the full filter computes them."""
    rng = np.random.default_rng(seed)
    fast, reference = StreamResampler(*rates), StreamResampler(*rates)
    reference.skip_silence = False
    for loud, n in pattern:
        x = rng.integers(-20000, 20000, n).astype("<i2") if loud else np.zeros(n, dtype="<i2")
        assert fast.process(x.tobytes()) == reference.process(x.tobytes())
