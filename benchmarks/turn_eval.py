"""Turn-end detection on telephone audio: fixed VAD silence vs Silero short stop + Smart Turn v3 (not a test).

Every question is spoken by espeak-ng (Korean: the bench's questions; English: a few of the same
kind), once whole and twice with a pause of 0.2-0.8 s at a word boundary (an SSML break inside one
utterance, so the words before it keep a mid-sentence intonation), then put through
the telephone path the bot sees: 16 kHz -> 8 kHz, G.711 mu-law encode and decode, 8 kHz -> 16 kHz
with the bot's own ``StreamResampler``, followed by 3 s of line silence. Everything is measured in
AUDIO time (the position in the stream, not the wall clock), per policy:

- ``fixed``: Silero with ``stop_secs`` (the bot's 0.3 s) + ``turn_stop_secs`` (0.1 s): the turn is
  confirmed at the first VAD stop; a stop inside the inserted pause cuts the caller off.
- ``smart``: Silero with a short ``stop_secs``, then Smart Turn v3 (Pipecat's bundled
  ``smart-turn-v3.2-cpu.onnx``, through ``LocalSmartTurnAnalyzerV3``) on the audio from speech start
  (minus Pipecat's 0.5 s pre-roll) to the VAD stop, as Pipecat's ``TurnAnalyzerUserTurnStopStrategy``
  does. ``complete`` confirms the turn at the VAD stop (plus the inference's own time, reported
  separately); ``incomplete`` waits for speech to resume, or for the analyzer's silence fallback
  (``--fallback``, Pipecat's default 3 s).

Reported per policy: how long after the true end of speech the turn is confirmed (p50/p95/max),
how often a question with a pause is cut off (confirmed before the caller's true end), and for
Smart Turn the CPU time of one inference (process CPU, all threads). Writes docs/bench/turn.json.

    PYTHONPATH=bot .venv/bin/python benchmarks/turn_eval.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from ivrbot.assistant_settings import AssistantSettings, VadSettings
from ivrbot.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from ivrbot.audio.resample import StreamResampler
from ivrbot_tools.bench.profiles import QUESTIONS as KOREAN_QUESTIONS
from ivrbot_tools.demo import trim_silence
from ivrbot_tools.speech_samples import caller_speech

RATE = 16000
CHUNK = 320  # 20 ms at 16 kHz: what the transport pushes per RTP packet
TAIL_SECS = 3.0
PAUSES = (0.2, 0.4, 0.6, 0.8)
ENGLISH_QUESTIONS = (
    "What are your opening hours on Saturday",
    "When will my order arrive at my house",
    "I would like to change my password please",
    "Where is the nearest shop to the station",
)
SMART_PRE_SPEECH_SECS = 0.5  # SmartTurnParams.pre_speech_ms


@dataclass
class Clip:
    lang: str
    text: str
    pause: float  # 0: spoken whole
    audio: bytes  # 16 kHz s16le after the telephone path
    speech_end: float  # audio time of the caller's last word


def telephone(pcm16k: bytes) -> bytes:
    """16 kHz -> 8 kHz mu-law and back to 16 kHz, in 20 ms packets as the bot receives them."""
    down, up = StreamResampler(RATE, 8000), StreamResampler(8000, RATE)
    out = bytearray()
    for i in range(0, len(pcm16k), CHUNK * 2):
        narrow = down.process(pcm16k[i : i + CHUNK * 2])
        out += up.process(ulaw_to_pcm(pcm_to_ulaw(narrow)))
    return bytes(out)


def speech(text: str, voice: str) -> bytes:
    return trim_silence(caller_speech(text, voice=voice, sample_rate=RATE))


def speech_with_break(head: str, rest: str, pause: float, voice: str) -> bytes:
    """One espeak-ng utterance with an SSML break inside, so the first half keeps a mid-sentence
    intonation (two separate utterances would each end falling, like a finished question)."""
    ssml = f'<speak>{head} <break time="{int(pause * 1000)}ms"/> {rest}</speak>'
    wav = subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", "175", "--stdout", ssml],
                         check=True, capture_output=True, timeout=60).stdout
    pcm = subprocess.run(["sox", "-q", "-t", "wav", "-", "-t", "raw", "-r", str(RATE), "-e", "signed-integer",
                          "-b", "16", "-c", "1", "-L", "-"], input=wav, check=True, capture_output=True,
                         timeout=60).stdout
    return trim_silence(pcm)


def make_clips() -> list[Clip]:
    clips: list[Clip] = []
    lead = bytes(int(0.5 * RATE) * 2)
    tail = bytes(int(TAIL_SECS * RATE) * 2)
    for lang, voice, questions in (("ko", "ko", KOREAN_QUESTIONS), ("en", "en-us", ENGLISH_QUESTIONS)):
        for qi, q in enumerate(questions):
            words = q.split()
            cut = max(1, len(words) // 2)
            head, rest = " ".join(words[:cut]), " ".join(words[cut:])
            for pause in (0.0, PAUSES[qi % len(PAUSES)], PAUSES[(qi + 2) % len(PAUSES)]):
                if pause == 0.0:
                    body = speech(q, voice)
                else:
                    body = speech_with_break(head, rest, pause, voice)
                audio = telephone(lead + body + tail)
                end = (len(lead) + len(body)) / 2 / RATE + StreamResampler(8000, RATE).delay_seconds
                clips.append(Clip(lang, q, pause, audio, end))
    return clips


def vad_events(audio: bytes, vad: VadSettings, stop_secs: float) -> list[tuple[str, float]]:
    """(``start``/``stop``, audio time) as the bot's Silero would report them, 20 ms at a time."""
    analyzer = SileroVADAnalyzer(
        sample_rate=RATE,
        params=VADParams(
            confidence=vad.confidence, start_secs=vad.start_secs, stop_secs=stop_secs, min_volume=vad.min_volume
        ),
    )
    analyzer.set_sample_rate(RATE)
    events: list[tuple[str, float]] = []
    speaking = False
    for i in range(0, len(audio) - CHUNK * 2 + 1, CHUNK * 2):
        state = analyzer._run_analyzer(audio[i : i + CHUNK * 2])
        t = (i + CHUNK * 2) / 2 / RATE
        if state == VADState.SPEAKING and not speaking:
            speaking = True
            events.append(("start", t))
        elif state == VADState.QUIET and speaking:
            speaking = False
            events.append(("stop", t))
    return events


def fixed_policy(clip: Clip, events: list[tuple[str, float]], turn_stop: float) -> dict[str, Any]:
    return _outcome(clip, [(t + turn_stop, "silence") for kind, t in events if kind == "stop"])


def _outcome(clip: Clip, confirms: list[tuple[float, str]]) -> dict[str, Any]:
    """A confirmation before the true end cut the caller off; latency is to the first one after it."""
    after = [(t, by) for t, by in confirms if t >= clip.speech_end]
    out: dict[str, Any] = {"cut": any(t < clip.speech_end for t, _ in confirms), "confirmed": None}
    if after:
        out["confirmed"], out["by"] = after[0]
    return out


def smart_policy(
    clip: Clip, events: list[tuple[str, float]], analyzer: LocalSmartTurnAnalyzerV3, start_secs: float,
    fallback: float, cpu: list[float], probs: list[float],
) -> dict[str, Any]:
    """Smart Turn at every VAD stop; a ``complete`` (or the fallback) ends the turn and clears the buffer."""
    samples = np.frombuffer(clip.audio, dtype=np.int16).astype(np.float32) / 32768.0
    confirms: list[tuple[float, str]] = []
    seg0: float | None = None
    for n, (kind, t) in enumerate(events):
        if kind == "start":
            if seg0 is None:
                seg0 = max(0.0, t - start_secs - SMART_PRE_SPEECH_SECS)
            continue
        if seg0 is None:
            continue
        c0 = time.process_time()
        result = analyzer._predict_endpoint(samples[int(seg0 * RATE) : int(t * RATE)])
        cpu.append(time.process_time() - c0)
        probs.append(float(result["probability"]))
        if result["prediction"] == 1:
            confirms.append((t, "model"))
            seg0 = None
            continue
        resumed = next((t2 for k2, t2 in events[n + 1 :] if k2 == "start"), None)
        if resumed is None or resumed > t + fallback:
            confirms.append((t + fallback, "fallback"))
            seg0 = None
    return _outcome(clip, confirms)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(r["latency"] for r in rows if r["latency"] is not None)
    paused = [r for r in rows if r["pause"] > 0]

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

    return {
        "clips": len(rows),
        "confirmed_after_true_end_s": {"p50": pct(0.5), "p95": pct(0.95), "max": round(lat[-1], 3) if lat else None},
        "cut_off_mid_pause": sum(1 for r in paused if r["cut"]),
        "clips_with_pause": len(paused),
        "cut_off_without_pause": sum(1 for r in rows if r["pause"] == 0 and r["cut"]),
        "never_confirmed": sum(1 for r in rows if r["latency"] is None),
        "by_fallback": sum(1 for r in rows if r.get("by") == "fallback"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short-stop", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--fallback", type=float, default=3.0, help="Smart Turn silence fallback (Pipecat: 3 s)")
    ap.add_argument("--out", type=Path, default=Path("docs/bench/turn.json"))
    args = ap.parse_args()

    settings = AssistantSettings()
    vad = settings.vad
    clips = make_clips()
    analyzer = LocalSmartTurnAnalyzerV3(sample_rate=RATE)
    analyzer.set_sample_rate(RATE)
    # one warm inference: the first one pays onnxruntime's set-up
    analyzer._predict_endpoint(np.zeros(RATE, dtype=np.float32))

    policies: dict[str, list[dict[str, Any]]] = {}
    cpu: list[float] = []
    probs: list[float] = []
    fixed_name = f"fixed stop_secs={vad.stop_secs} + turn_stop_secs={settings.turn_stop_secs}"
    for clip in clips:
        ev = vad_events(clip.audio, vad, vad.stop_secs)
        r = fixed_policy(clip, ev, settings.turn_stop_secs)
        policies.setdefault(fixed_name, []).append(_row(clip, r))
        for short in args.short_stop:
            ev_s = vad_events(clip.audio, vad, short)
            r = fixed_policy(clip, ev_s, settings.turn_stop_secs)
            policies.setdefault(f"fixed stop_secs={short} + turn_stop_secs={settings.turn_stop_secs}", []).append(
                _row(clip, r)
            )
            r = smart_policy(clip, ev_s, analyzer, vad.start_secs, args.fallback, cpu, probs)
            policies.setdefault(f"silero stop_secs={short} + smart turn v3", []).append(_row(clip, r))

    load = os.getloadavg()
    report = {
        "what": "audio time from the true end of speech to the turn-end confirmation; telephone path "
        "(8 kHz mu-law round trip, upsampled to 16 kHz as the bot does); espeak-ng speech",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in load],
            "python": platform.python_version(),
        },
        "smart_turn": {
            "model": "smart-turn-v3.2-cpu.onnx (pipecat-ai, LocalSmartTurnAnalyzerV3, 1 thread)",
            "fallback_secs": args.fallback,
            "inferences": len(cpu),
            "cpu_ms_per_inference": {
                "p50": round(1000 * statistics.median(cpu), 1),
                "max": round(1000 * max(cpu), 1),
            },
            "probability_complete": {"min": round(min(probs), 3), "median": round(statistics.median(probs), 3),
                                     "max": round(max(probs), 3)},
        },
        "policies": {name: summarize(rows) for name, rows in policies.items()},
        "per_language": {
            name: {lang: summarize([r for r in rows if r["lang"] == lang]) for lang in ("ko", "en")}
            for name, rows in policies.items()
        },
        "clips": {name: rows for name, rows in policies.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("machine", "smart_turn", "policies")}, indent=1))


def _row(clip: Clip, r: dict[str, Any]) -> dict[str, Any]:
    confirmed = r["confirmed"]
    latency = None if confirmed is None else round(confirmed - clip.speech_end, 3)
    row = {"lang": clip.lang, "text": clip.text, "pause": clip.pause, "latency": latency, "cut": r["cut"]}
    if "by" in r:
        row["by"] = r["by"]
    return row


if __name__ == "__main__":
    main()
