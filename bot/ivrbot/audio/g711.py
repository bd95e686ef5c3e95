"""G.711 mu-law via 64 Ki / 256 entry lookup tables (bit-exact with Sun's g711.c reference coder,
as CPython's audioop and Pipecat's ``pcm_to_ulaw`` run it).

Silence in PCMU is 0xFF (decodes to 0); 0x00 is close to full negative scale.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PCMU_SILENCE = 0xFF
_BIAS = 0x84
_CLIP14 = 8159
_SEG_END14 = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _encode_one(sample: int) -> int:
    # 14-bit coder of Sun's g711.c as CPython's audioop runs it: arithmetic shift first, then sign.
    val = sample >> 2
    mask = 0xFF
    if val < 0:
        val = -val
        mask = 0x7F
    val = min(val, _CLIP14) + (_BIAS >> 2)
    seg = 0
    while seg < 8 and val > _SEG_END14[seg]:
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((val >> (seg + 1)) & 0x0F)) ^ mask


def _decode_one(code: int) -> int:
    code = ~code & 0xFF
    mag = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return _BIAS - mag if code & 0x80 else mag - _BIAS


# Index the encode table by the int16 sample reinterpreted as uint16.
_ENCODE: npt.NDArray[np.uint8] = np.array(
    [_encode_one(int(np.int16(np.uint16(i)))) for i in range(65536)], dtype=np.uint8
)
_DECODE: npt.NDArray[np.int16] = np.array([_decode_one(c) for c in range(256)], dtype=np.int16)


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """s16le mono PCM -> mu-law bytes (one byte per sample)."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    return _ENCODE[samples.view(np.uint16)].tobytes()


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    """mu-law bytes -> s16le mono PCM."""
    codes = np.frombuffer(ulaw, dtype=np.uint8)
    return _DECODE[codes].astype("<i2", copy=False).tobytes()


def ulaw_to_array(ulaw: bytes) -> npt.NDArray[np.int16]:
    """mu-law bytes -> int16 samples (for DSP without a bytes round trip)."""
    return _DECODE[np.frombuffer(ulaw, dtype=np.uint8)]
