"""What one call's assistant needs to know; `config.py` fills it from the YAML file and IVRBOT_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant answering a phone call. Always answer in English. "
    "Start with a short sentence, and reply in one or two short, plain sentences. "
    "Do not use lists, markdown, emojis or abbreviations: everything you write is spoken aloud."
)

DtmfActionKind = Literal["transfer", "hangup", "say"]


@dataclass(frozen=True)
class DtmfAction:
    """One DTMF menu entry: transfer to ``target``, hang up, or ``text`` sent as if the caller said it."""

    action: DtmfActionKind
    target: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if self.action == "transfer" and not self.target.startswith(("sip:", "sips:", "tel:")):
            raise ValueError(f"DTMF transfer needs a sip:/sips:/tel: target, got {self.target!r}")
        if self.action == "say" and not self.text.strip():
            raise ValueError("DTMF 'say' needs a non-empty text")
        if self.action not in ("transfer", "hangup", "say"):
            raise ValueError(f"unknown DTMF action {self.action!r}")


DTMF_KEYS = frozenset("0123456789*#ABCD")


def parse_dtmf_map(raw: dict[str, dict[str, str]]) -> dict[str, DtmfAction]:
    """Turn the IVRBOT_DTMF_MAP JSON object into actions; raises ValueError naming the bad entry."""
    out: dict[str, DtmfAction] = {}
    for key, spec in raw.items():
        if key not in DTMF_KEYS:
            raise ValueError(f"DTMF map: {key!r} is not a DTMF key")
        if not isinstance(spec, dict) or "action" not in spec:
            raise ValueError(f"DTMF map: entry for {key!r} needs an 'action'")
        try:
            out[key] = DtmfAction(
                action=spec["action"],  # type: ignore[arg-type]
                target=str(spec.get("target", "")),
                text=str(spec.get("text", "")),
            )
        except ValueError as exc:
            raise ValueError(f"DTMF map: key {key!r}: {exc}") from exc
    return out


@dataclass(frozen=True)
class VadSettings:
    """Silero VAD thresholds; defaults are for 8 kHz telephone audio upsampled to 16 kHz (see vad.py)."""

    confidence: float = 0.6
    start_secs: float = 0.15
    stop_secs: float = 0.3
    min_volume: float = 0.4
    #: silence after which a pause is signalled (forced Vosk final, preemptive reply); < stop_secs, 0 = none
    pause_secs: float = 0.15


@dataclass(frozen=True)
class AssistantSettings:
    """Per-process assistant configuration, shared read-only by every call."""

    #: the sidecars on the pod's loopback at their own default ports (the one place these are written;
    #: ivrbot_sidecars' servers default to the same ports, pinned by tests/config/test_bot_config.py)
    vosk_url: str = "ws://127.0.0.1:2700"
    piper_url: str = "ws://127.0.0.1:5002"
    llama_url: str = "http://127.0.0.1:8080/v1"
    llm_model: str = "local"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    greeting: str = ""
    #: a spoken reply of two short sentences; a cap keeps a rambling model off the line
    max_tokens: int = 60
    temperature: float = 0.3
    #: seconds from the request to the reply's first token before the turn is abandoned with the apology
    llm_first_token_timeout_secs: float = 10.0
    #: seconds llama-server may go quiet between two tokens of a reply before the same happens
    llm_stall_timeout_secs: float = 4.0
    vad: VadSettings = field(default_factory=VadSettings)
    #: seconds after the VAD's stop before the user turn ends (on top of vad.stop_secs). 0: the turn
    #: ends on the stop once the finalized transcript is in, which the pause's final usually already
    #: is (turn_stop.py); 0.1 before 2026-12-04, which the caller heard on every reply
    turn_stop_secs: float = 0.0
    dtmf_map: dict[str, DtmfAction] = field(default_factory=dict)
    #: caller phrases (case-insensitive substrings of a final transcript) that end the call
    hangup_phrases: tuple[str, ...] = ("goodbye", "good bye", "bye bye")
    #: hang up after this many seconds with neither side speaking; 0 disables
    silence_timeout_secs: float = 30.0
    #: text of the apology rendered at process start (the caller hears it when a sidecar fails)
    apology_text: str = "Sorry, I am having trouble right now. Please try again in a moment."
    #: sample rate Piper announces for its voice; the TTS service emits audio at this rate
    tts_sample_rate: int = 22050
    #: sample rate the transport delivers caller audio at (Vosk and Silero both get this)
    audio_in_sample_rate: int = 16000
    #: a Vosk server that, while a final is awaited, sends nothing for half of this and then does not
    #: accept a new WebSocket connection within this has stalled: the utterance is reported lost
    #: (apology) and the session replaced. A slow but live server accepts it and is waited for.
    stt_stall_timeout_secs: float = 1.0
    #: start the reply (LLM and first clause's TTS) at the caller's pause (``vad.pause_secs``) on a forced
    #: Vosk final, and play it when the turn is confirmed with that transcript (services/preemptive.py)
    preemptive_replies: bool = False
    #: while the caller speaks, have llama-server evaluate the transcript so far into its KV cache, so
    #: the turn's request evaluates only the last words (services/llm_prefill.py)
    llm_prefill: bool = True
    #: the first words of a reply go to Piper at the first word boundary after the model has written
    #: for this long (two words at least), if no clause break or 40 characters came first
    #: (services/first_clause.py); 0 = at the second word: 0.15 before 2026-12-04, whose longer first
    #: chunk Piper took ~120 ms more to synthesize while llama-server wrote the rest (docs/benchmarks.md)
    tts_first_chunk_secs: float = 0.0
