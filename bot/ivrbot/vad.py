"""Silero VAD for telephone audio, attached to the user aggregator (Pipecat 1.14's place for it).

Defaults, and why (8 kHz G.711 upsampled to 16 kHz; line noise and codec artefacts, no music):
- confidence 0.6 (Pipecat 0.7): band-limited speech scores lower in Silero than wideband speech.
- start_secs 0.15 (Pipecat 0.2): barge-in must feel immediate; 150 ms still rejects clicks and DTMF blips.
- stop_secs 0.3 (Pipecat 0.2): phone speakers pause mid-sentence; the STT is finalised at this point,
  so it is the main knob of end-of-question latency (budget VAD->STT <= 500 ms).
- min_volume 0.4 (Pipecat 0.6): G.711 calls arrive quieter than headset audio, after AGC-less gateways.

The analyzer runs on the event loop, not in Pipecat's one-thread executor: a Silero window costs
about 0.3 ms, while handing every 20 ms chunk to a thread and waking the loop back up cost more CPU
than the model itself (measured: benchmarks/call_cpu.py, docs/benchmarks.md).
"""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from ivrbot.assistant_settings import VadSettings

SILERO_RATES = (8000, 16000)


def vad_params(settings: VadSettings) -> VADParams:
    """Validated VADParams; out-of-range values are a configuration error, not a silent clamp."""
    if not 0.0 < settings.confidence < 1.0:
        raise ValueError(f"VAD confidence must be in (0, 1), got {settings.confidence}")
    if not 0.0 <= settings.min_volume <= 1.0:
        raise ValueError(f"VAD min_volume must be in [0, 1], got {settings.min_volume}")
    if settings.start_secs < 0 or settings.stop_secs <= 0:
        raise ValueError("VAD start_secs must be >= 0 and stop_secs > 0")
    return VADParams(
        confidence=settings.confidence,
        start_secs=settings.start_secs,
        stop_secs=settings.stop_secs,
        min_volume=settings.min_volume,
    )


class InlineSileroVADAnalyzer(SileroVADAnalyzer):
    """Silero VAD analysed on the caller's task: same model, same decisions, no thread hop per chunk."""

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)


def make_vad(settings: VadSettings, sample_rate: int = 16000) -> InlineSileroVADAnalyzer:
    """A Silero analyzer at the transport's input rate (Silero only runs at 8 or 16 kHz)."""
    if sample_rate not in SILERO_RATES:
        raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
    return InlineSileroVADAnalyzer(sample_rate=sample_rate, params=vad_params(settings))
