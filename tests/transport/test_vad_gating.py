"""The inline, volume-gated Silero VAD decides like Pipecat's own on real (synthetic) caller speech.

Audio goes the way a call's does: 8 kHz speech -> mu-law -> decode -> 8k->16k resampler -> 40 ms
chunks. The stock ``SileroVADAnalyzer`` (its synchronous analysis, as its executor runs it) is the
reference: the gated analyzer must see speech start no later than it does (the first syllable is
never lost), stop within a window of it, and skip the model over the silence.
"""

from __future__ import annotations

import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

from ivrbot.assistant_settings import VadSettings
from ivrbot.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from ivrbot.audio.resample import StreamResampler
from ivrbot.vad import InlineSileroVADAnalyzer, make_vad, vad_params
from ivrbot_tools.speech_samples import SpeechToolMissing, caller_speech, silence

CHUNK = 1280  # 40 ms at 16 kHz, as OpenSIPSTransport pushes it


def call_audio(pcm8k: bytes) -> list[bytes]:
    pcm16k = StreamResampler(8000, 16000).process(ulaw_to_pcm(pcm_to_ulaw(pcm8k)))
    return [pcm16k[i : i + CHUNK] for i in range(0, len(pcm16k) - CHUNK + 1, CHUNK)]


def states(analyzer: SileroVADAnalyzer, chunks: list[bytes]) -> list[VADState]:
    analyzer.set_sample_rate(16000)
    return [analyzer._run_analyzer(c) for c in chunks]


def transitions(seq: list[VADState]) -> list[tuple[int, VADState]]:
    """(chunk index, state) where the confirmed state changes (SPEAKING / QUIET)."""
    out: list[tuple[int, VADState]] = []
    last = VADState.QUIET
    for i, s in enumerate(seq):
        if s in (VADState.SPEAKING, VADState.QUIET) and s != last:
            out.append((i, s))
            last = s
    return out


@pytest.fixture(scope="module")
def speech() -> bytes:
    try:
        return caller_speech("안녕하세요 영업 시간이 어떻게 되나요", voice="ko", sample_rate=8000)
    except SpeechToolMissing as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("lead_secs", [0.0, 0.02, 0.5, 2.0])
def test_onset_and_end_match_the_stock_analyzer(speech: bytes, lead_secs: float) -> None:
    pcm = silence(lead_secs, sample_rate=8000) + speech + silence(1.5, sample_rate=8000) + speech \
        + silence(1.0, sample_rate=8000)
    chunks = call_audio(pcm)
    settings = VadSettings()
    stock = transitions(states(SileroVADAnalyzer(sample_rate=16000, params=vad_params(settings)), chunks))
    gated_vad = make_vad(settings)
    gated = transitions(states(gated_vad, chunks))
    assert [s for _, s in stock] == [s for _, s in gated], (stock, gated)
    assert len(stock) == 4  # two utterances, each started and stopped
    for (i_ref, s), (i, _) in zip(stock, gated, strict=True):
        if s is VADState.SPEAKING:
            assert i <= i_ref, f"speech start seen at chunk {i}, the stock analyzer at {i_ref}"
        else:
            assert abs(i - i_ref) <= 1
    # the leading silence and the pause between the utterances did not run the model
    if lead_secs >= 0.5:
        assert gated_vad.skipped_windows >= lead_secs * 16000 / 512 - 1


def test_digital_silence_never_runs_the_model() -> None:
    vad = make_vad(VadSettings())
    seq = states(vad, call_audio(silence(3.0, sample_rate=8000)))
    assert set(seq) == {VADState.QUIET}
    assert vad.model_windows == 0 and vad.skipped_windows > 80


def test_replay_warms_the_model_before_the_first_scored_window(speech: bytes) -> None:
    """Skipped windows are replayed once volume returns: the model has heard the onset."""
    vad = make_vad(VadSettings())
    assert isinstance(vad, InlineSileroVADAnalyzer)
    states(vad, call_audio(silence(1.0, sample_rate=8000) + speech[: 8000 * 2]))
    assert vad.model_windows > 0 and not vad._replay
