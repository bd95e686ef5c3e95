import warnings

import numpy as np

from ivrbot.audio.g711 import PCMU_SILENCE, pcm_to_ulaw, ulaw_to_pcm

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the CPython reference G.711 coder (Sun's g711.c), still shipped in 3.12


def test_encode_is_bit_exact_with_the_reference_for_every_sample() -> None:
    pcm = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert pcm_to_ulaw(pcm) == audioop.lin2ulaw(pcm, 2)


def test_decode_is_bit_exact_with_the_reference_for_every_code() -> None:
    codes = bytes(range(256))
    assert ulaw_to_pcm(codes) == audioop.ulaw2lin(codes, 2)


def test_known_reference_values() -> None:
    decoded = np.frombuffer(ulaw_to_pcm(bytes([0x00, 0x7F, 0x80, 0xFF])), dtype="<i2").tolist()
    assert decoded == [-32124, 0, 32124, 0]
    assert pcm_to_ulaw(np.array([0, 32767, -32768], dtype="<i2").tobytes()) == bytes([PCMU_SILENCE, 0x80, 0x00])
