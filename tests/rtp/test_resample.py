import numpy as np
import pytest

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
