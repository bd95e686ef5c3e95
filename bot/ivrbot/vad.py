"""Silero VAD for telephone audio, attached to the user aggregator (Pipecat 1.14's place for it).

Defaults, and why (8 kHz G.711 upsampled to 16 kHz; line noise and codec artefacts, no music):
- confidence 0.6 (Pipecat 0.7): band-limited speech scores lower in Silero than wideband speech.
- start_secs 0.15 (Pipecat 0.2): barge-in must feel immediate; 150 ms still rejects clicks and DTMF blips.
- stop_secs 0.3 (Pipecat 0.2): phone speakers pause mid-sentence; the STT is finalised at this point,
  so it is the main knob of end-of-question latency (budget VAD->STT <= 500 ms).
- min_volume 0.4 (Pipecat 0.6): G.711 calls arrive quieter than headset audio, after AGC-less gateways.
- pause_secs 0.15 (not in Pipecat): a pause, signalled once while the VAD waits out ``stop_secs``
  (``on_pause(True)``; ``on_pause(False)`` if the caller speaks again before the stop). The STT
  finalizes Vosk on it, so the turn's transcript is in when the stop comes and the turn ends on the
  stop (a preemptive reply, when enabled, starts there too); but each pause splits Vosk's decoding,
  and a reply started on a mid-sentence pause is thrown away. 0.15 s (5 Silero windows) is above the
  stop closures of speech (Korean tense stops hold ~0.1-0.15 s of near silence) and still half of
  ``stop_secs``. 0 disables it.

The analyzer runs on the event loop, not in Pipecat's one-thread executor: a Silero window costs
about 0.3 ms, while handing every 20 ms chunk to a thread and waking the loop back up cost more CPU
than the model itself (measured: benchmarks/call_cpu.py, docs/benchmarks.md).

Pipecat calls a window speech only if Silero's confidence AND the smoothed loudness (BS.1770 over
400 ms) pass their thresholds, so below ``min_volume`` the model's answer cannot change the
decision: those windows skip the model, and a window of digital silence (the caller muted, PCMU
silence, gaps the jitter buffer fills) skips the loudness measure too (it is exactly 0). When the
volume comes back, the model is reset and first run over the last ``REPLAY_WINDOWS`` skipped
windows, so it has heard the onset of the speech just as it would have without the skip.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

from ivrbot.assistant_settings import VadSettings
from ivrbot.pause_signal import PauseCallback

SILERO_RATES = (8000, 16000)


def windows(secs: float, sample_rate: int = 16000) -> int:
    """Silero windows in ``secs``, rounded as Pipecat's VADAnalyzer rounds its start and stop."""
    frames = 512 if sample_rate == 16000 else 256  # SileroVADAnalyzer.num_frames_required
    return round(secs / (frames / sample_rate))


def pause_windows(pause_secs: float, stop_secs: float, sample_rate: int = 16000) -> int:
    """Silero windows of silence that signal a pause (0: no pause signal); a pause must be shorter
    than the stop in whole windows, so a pause and a stop 10 ms apart that round alike are refused."""
    if pause_secs <= 0:
        return 0
    pause = max(1, windows(pause_secs, sample_rate))
    if pause >= windows(stop_secs, sample_rate):
        raise ValueError(f"VAD pause_secs {pause_secs} is not shorter than stop_secs {stop_secs} "
                         "in 32 ms Silero windows")
    return pause


def check_vad(settings: VadSettings, sample_rate: int = 16000) -> VADParams:
    """``vad_params`` and the analyzer's pause rule: what every call's VAD set-up would refuse,
    refused once, at start."""
    params = vad_params(settings)
    pause_windows(settings.pause_secs, settings.stop_secs, sample_rate)
    return params


def vad_params(settings: VadSettings) -> VADParams:
    """Validated VADParams; out-of-range values are a configuration error, not a silent clamp."""
    if not 0.0 < settings.confidence < 1.0:
        raise ValueError(f"VAD confidence must be in (0, 1), got {settings.confidence}")
    if not 0.0 <= settings.min_volume <= 1.0:
        raise ValueError(f"VAD min_volume must be in [0, 1], got {settings.min_volume}")
    if settings.start_secs < 0 or settings.stop_secs <= 0:
        raise ValueError("VAD start_secs must be >= 0 and stop_secs > 0")
    if not 0 <= settings.pause_secs < settings.stop_secs:
        raise ValueError(f"VAD pause_secs must be in [0, stop_secs={settings.stop_secs}), got {settings.pause_secs}")
    return VADParams(
        confidence=settings.confidence,
        start_secs=settings.start_secs,
        stop_secs=settings.stop_secs,
        min_volume=settings.min_volume,
    )


#: skipped windows replayed through the freshly reset model when the volume comes back (~256 ms)
REPLAY_WINDOWS = 8


class InlineSileroVADAnalyzer(SileroVADAnalyzer):
    """Silero VAD analysed on the caller's task; the model only runs where its answer can matter."""

    def __init__(
        self, *, sample_rate: int | None = None, params: VADParams | None = None, pause_secs: float = 0.0
    ) -> None:
        self._pause_secs = pause_secs
        self._pause_frames = 0  # silent windows of a pause; 0: no pause signal (set with the params)
        self._paused = False  # a pause was signalled (or is due) and neither a resume nor the stop came
        #: due to on_pause, in order: True a pause, False a resume. A chunk of several windows can
        #: hold a resume and the next pause; both are told, so a listener never misses the resume.
        self._due: list[bool] = []
        #: told of each pause and resume (``pause_signal.pause_forwarder``); None: nobody listens
        self.on_pause: PauseCallback | None = None
        super().__init__(sample_rate=sample_rate, params=params)
        self._replay: deque[bytes] = deque(maxlen=REPLAY_WINDOWS)
        self._zero_run = 0  # trailing bytes of digital silence fed to the volume tracker
        self.model_windows = 0
        self.skipped_windows = 0

    def set_params(self, params: VADParams) -> None:
        super().set_params(params)
        if self._pause_secs > 0 and self.sample_rate:
            self._pause_frames = pause_windows(self._pause_secs, params.stop_secs, self.sample_rate)
        self._paused, self._due = False, []

    async def analyze_audio(self, buffer: bytes) -> VADState:
        state = self._run_analyzer(buffer)
        if self._due:  # rare: nearly every 20 ms chunk has nothing to tell, and allocates nothing
            due, self._due = self._due, []
            for signal in due:
                if self.on_pause is not None:
                    await self.on_pause(signal)
        return state

    def _pause(self) -> None:
        self._paused = True
        self._due.append(True)

    def _unpause(self, *, resumed: bool) -> None:
        """The pause ends: a pause not yet told is withdrawn; a told one gets a resume, unless the
        stop ends it (the stop says it all)."""
        self._paused = False
        if self._due and self._due[-1]:
            self._due.pop()
        elif resumed:
            self._due.append(False)

    def _get_smoothed_volume(self, audio: bytes) -> float:
        self._volume_tracker.update(audio, self.sample_rate)
        zero = not np.frombuffer(audio, dtype=np.uint8).any()
        self._zero_run = self._zero_run + len(audio) if zero else 0
        if self._zero_run >= 2 * VOLUME_WINDOW_SECS * self.sample_rate:
            volume = 0.0  # BS.1770 loudness of silence is -inf, which Pipecat normalizes to 0
        else:
            volume = self._volume_tracker.volume
        return exp_smoothing(volume, self._prev_volume, self._smoothing_factor)

    def _confidence(self, window: bytes, volume: float) -> float:
        if volume < self._params.min_volume:
            self._replay.append(window)
            self.skipped_windows += 1
            return 0.0
        if self._replay:
            self._model.reset_states()  # type: ignore[no-untyped-call]
            for old in self._replay:
                self._model(np.frombuffer(old, np.int16).astype(np.float32) / 32768.0, self.sample_rate)
            self._replay.clear()
        self.model_windows += 1
        return float(np.asarray(self.voice_confidence(window)).item())

    def _run_analyzer(self, buffer: bytes) -> VADState:
        """Pipecat 1.14's ``VADAnalyzer._run_analyzer`` with the volume measured before the model."""
        self._vad_buffer += buffer
        n = self._vad_frames_num_bytes
        while len(self._vad_buffer) >= n:
            window = self._vad_buffer[:n]
            self._vad_buffer = self._vad_buffer[n:]
            volume = self._get_smoothed_volume(window)
            self._prev_volume = volume
            confidence = self._confidence(window, volume)
            speaking = confidence >= self._params.confidence and volume >= self._params.min_volume
            state = self._vad_state
            if speaking:
                if state is VADState.QUIET:
                    self._vad_state, self._vad_starting_count = VADState.STARTING, 1
                elif state is VADState.STARTING:
                    self._vad_starting_count += 1
                elif state is VADState.STOPPING:
                    self._vad_state, self._vad_stopping_count = VADState.SPEAKING, 0
                    if self._paused:
                        self._unpause(resumed=True)
            elif state is VADState.STARTING:
                self._vad_state, self._vad_starting_count = VADState.QUIET, 0
            elif state is VADState.SPEAKING:
                self._vad_state, self._vad_stopping_count = VADState.STOPPING, 1
                if self._pause_frames == 1:
                    self._pause()
            elif state is VADState.STOPPING:
                self._vad_stopping_count += 1
                if self._vad_stopping_count == self._pause_frames:
                    self._pause()
        if self._vad_state is VADState.STARTING and self._vad_starting_count >= self._vad_start_frames:
            self._vad_state, self._vad_starting_count = VADState.SPEAKING, 0
        if self._vad_state is VADState.STOPPING and self._vad_stopping_count >= self._vad_stop_frames:
            self._vad_state, self._vad_stopping_count = VADState.QUIET, 0
            if self._paused:
                self._unpause(resumed=False)
        return self._vad_state


def make_vad(settings: VadSettings, sample_rate: int = 16000) -> InlineSileroVADAnalyzer:
    """A Silero analyzer at the transport's input rate (Silero only runs at 8 or 16 kHz)."""
    if sample_rate not in SILERO_RATES:
        raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
    return InlineSileroVADAnalyzer(sample_rate=sample_rate, params=vad_params(settings),
                                   pause_secs=settings.pause_secs)
