"""The IVRBot spec as a typed value, and the rules the CRD schema cannot express.

Parsing never raises on a bad spec: it returns every problem with the field path,
so the operator can refuse the spec with a condition and an event naming the field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ivrbot_operator import defaults as d
from ivrbot_operator.config import Images
from ivrbot_operator.crd import apply_defaults, spec_schema
from ivrbot_operator.ports import PortPool, block_size

DTMF_KEYS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True)
class SpecProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Sidecar:
    image: str
    args: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BotSpec:
    replicas: int
    image: str
    image_pull_policy: str
    sip_port: int | None
    max_calls: int
    trusted_proxies: tuple[str, ...]
    rtp_ports: int
    system_prompt: str
    greeting: str
    max_tokens: int
    hangup_phrases: tuple[str, ...]
    silence_timeout_secs: float
    llm_prefill: bool
    preemptive_replies: bool
    tts_first_chunk_secs: float
    vad: dict[str, float]
    dtmf_map: dict[str, Any]
    stt: Sidecar
    tts: Sidecar
    tts_voice: str
    llm: Sidecar
    llm_model: str
    llm_model_url: str | None
    llm_ctx_size: int
    llm_parallel: int
    models_volume: dict[str, Any] | None
    otlp_endpoint: str | None
    log_level: str
    drain_grace_seconds: int
    dispatcher_set_id: int
    dispatcher_weight: int
    dispatcher_priority: int
    resources: dict[str, Any]
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, Any], ...]
    affinity: dict[str, Any]


class _Reader:
    """Typed access to the defaulted spec, recording problems instead of raising."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.problems: list[SpecProblem] = []

    def _get(self, path: str) -> Any:
        node: Any = self.spec
        for part in path.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def integer(self, path: str, lo: int, hi: int, *, optional: bool = False) -> int | None:
        value = self._get(path)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(SpecProblem(f"spec.{path}", f"must be an integer, got {value!r}"))
            return None
        if not lo <= value <= hi:
            self.problems.append(SpecProblem(f"spec.{path}", f"{value} is outside {lo}..{hi}"))
            return None
        return value

    def number(self, path: str, lo: float, hi: float) -> float:
        value = self._get(path)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            self.problems.append(SpecProblem(f"spec.{path}", f"must be a number in {lo}..{hi}, got {value!r}"))
            return lo
        return float(value)

    def boolean(self, path: str) -> bool:
        value = self._get(path)
        if not isinstance(value, bool):
            self.problems.append(SpecProblem(f"spec.{path}", f"must be true or false, got {value!r}"))
            return False
        return value

    def string(self, path: str, *, optional: bool = False) -> str | None:
        value = self._get(path)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (not value and not optional):
            self.problems.append(SpecProblem(f"spec.{path}", f"must be a non-empty string, got {value!r}"))
            return None
        return value

    def strings(self, path: str) -> tuple[str, ...]:
        value = self._get(path)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(SpecProblem(f"spec.{path}", "must be a list of strings"))
            return ()
        return tuple(value)

    def mapping(self, path: str) -> dict[str, Any]:
        value = self._get(path)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(SpecProblem(f"spec.{path}", "must be an object"))
            return {}
        return value


def _check_dtmf(dtmf: dict[str, Any], problems: list[SpecProblem]) -> None:
    for key, entry in dtmf.items():
        where = f"spec.assistant.dtmfMap[{key}]"
        if key not in DTMF_KEYS:
            problems.append(SpecProblem(where, "key must be one of 0-9 * # A-D"))
            continue
        action = entry.get("action") if isinstance(entry, dict) else None
        if action == "transfer" and not str(entry.get("target", "")).startswith(("sip:", "sips:", "tel:")):
            problems.append(SpecProblem(f"{where}.target", "a transfer needs a sip:, sips: or tel: target"))
        elif action == "say" and not entry.get("text"):
            problems.append(SpecProblem(f"{where}.text", "a say action needs text"))
        elif action not in ("transfer", "say", "hangup"):
            problems.append(SpecProblem(f"{where}.action", f"unknown action {action!r}"))


def _silero_windows(secs: float) -> int:
    """32 ms Silero windows in ``secs``, rounded as the bot's VAD (Pipecat's) rounds them."""
    return round(secs / (512 / 16000))


def _check_vad(vad: dict[str, float], problems: list[SpecProblem]) -> None:
    """What the bot's VAD refuses (at start, or worse at every call's set-up), refused here by field."""
    where = "spec.assistant.vad"
    if not 0 < vad["confidence"] < 1:
        problems.append(SpecProblem(f"{where}.confidence", f"{vad['confidence']:g} must be above 0 and below 1"))
    if not vad["stopSecs"] > 0:
        problems.append(SpecProblem(f"{where}.stopSecs", "must be above 0"))
        return
    pause, stop = vad["pauseSecs"], vad["stopSecs"]
    # a pause is a silence shorter than the end of a turn, in seconds and in whole Silero windows
    if not pause < stop or (pause > 0 and max(1, _silero_windows(pause)) >= _silero_windows(stop)):
        problems.append(SpecProblem(f"{where}.pauseSecs", (
            f"{pause:g} must be shorter than {where}.stopSecs ({stop:g}) by at least one 32 ms window")))


def parse_spec(
    raw: dict[str, Any] | None, pool: PortPool, images: Images | None = None,
) -> tuple[BotSpec | None, list[SpecProblem]]:
    """Defaulted, typed spec, or None with every problem found."""
    spec = apply_defaults(spec_schema()["properties"]["spec"], dict(raw or {}))
    r = _Reader(spec)
    replicas = r.integer("replicas", 0, 200)
    max_calls = r.integer("sip.maxCalls", 1, 1000)
    sip_port = r.integer("sip.port", 1, 65535, optional=True)
    rtp_ports = r.integer("rtp.portsPerPod", 2, 20000)
    drain = r.integer("drainGraceSeconds", 0, 3600)
    ctx = r.integer("llm.ctxSize", 256, 131072)
    parallel = r.integer("llm.parallel", 1, 256, optional=True)
    set_id = r.integer("dispatcher.setId", 1, 65535)
    weight = r.integer("dispatcher.weight", 0, 1000)
    priority = r.integer("dispatcher.priority", 0, 1000)
    before_vad = len(r.problems)
    vad = {
        "confidence": r.number("assistant.vad.confidence", 0, 1),
        "startSecs": r.number("assistant.vad.startSecs", 0, 5),
        "stopSecs": r.number("assistant.vad.stopSecs", 0, 5),
        "minVolume": r.number("assistant.vad.minVolume", 0, 1),
        "pauseSecs": r.number("assistant.vad.pauseSecs", 0, 5),
    }
    if len(r.problems) == before_vad:
        _check_vad(vad, r.problems)
    max_tokens = r.integer("assistant.maxTokens", 1, 4096)
    silence_timeout = r.number("assistant.silenceTimeoutSecs", 0, 86400)
    first_chunk = r.number("assistant.ttsFirstChunkSecs", 0, 5)
    llm_prefill = r.boolean("assistant.llmPrefill")
    preemptive = r.boolean("assistant.preemptiveReplies")
    # the bot matches a phrase against the transcript with its whitespace collapsed
    hangup_phrases = tuple(" ".join(p.split()) for p in r.strings("assistant.hangupPhrases"))
    for i, phrase in enumerate(hangup_phrases):
        if not phrase or "," in phrase:
            # the bot's IVRBOT_HANGUP_PHRASES is a comma-separated list
            r.problems.append(SpecProblem(f"spec.assistant.hangupPhrases[{i}]",
                                          f"{phrase!r} must be non-blank and hold no comma"))
    proxies = r.strings("sip.trustedProxies")
    for i, cidr in enumerate(proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            r.problems.append(SpecProblem(f"spec.sip.trustedProxies[{i}]", f"{cidr!r} is not a CIDR"))
    if rtp_ports is not None:
        if rtp_ports % 2:
            r.problems.append(SpecProblem("spec.rtp.portsPerPod", f"{rtp_ports} must be even (RTP + RTCP pairs)"))
        elif max_calls is not None and rtp_ports < 2 * max_calls:
            r.problems.append(SpecProblem(
                "spec.rtp.portsPerPod", f"{rtp_ports} ports cannot carry sip.maxCalls={max_calls} (2 per call)"))
        elif block_size(rtp_ports) > pool.size:
            r.problems.append(SpecProblem(
                "spec.rtp.portsPerPod",
                f"one pod needs {block_size(rtp_ports)} ports but the operator's pool {pool} has {pool.size}"))
    if sip_port is not None and not pool.contains(sip_port):
        r.problems.append(SpecProblem("spec.sip.port", f"{sip_port} is outside the operator's port pool {pool}"))
    otlp = r.string("otlpEndpoint", optional=True)
    if otlp and urlparse(otlp).scheme not in ("http", "https"):
        r.problems.append(SpecProblem("spec.otlpEndpoint", f"{otlp!r} must be an http:// or https:// URL"))
    dtmf = r.mapping("assistant.dtmfMap")
    _check_dtmf(dtmf, r.problems)
    images = images or Images()
    image = r.string("image", optional=True) or images.bot
    pull = r.string("imagePullPolicy")
    if pull not in (None, "Always", "IfNotPresent", "Never"):
        r.problems.append(SpecProblem("spec.imagePullPolicy", f"unknown policy {pull!r}"))
    log_level = r.string("logLevel")
    stt_image = r.string("stt.image", optional=True) or images.vosk
    tts_image = r.string("tts.image", optional=True) or images.piper
    llm_image = r.string("llm.image", optional=True) or images.llama
    voice, model = r.string("tts.voice"), r.string("llm.model")
    models_volume = r.mapping("modelsVolume") or None
    model_url = r.string("llm.modelUrl", optional=True)
    if model and models_volume is None and not model_url and model.startswith(d.MODELS_MOUNT + "/"):
        r.problems.append(SpecProblem("spec.llm.model", (
            f"{model} lies on the default /models volume, an empty emptyDir, so llama-server would never"
            " start: set spec.llm.modelUrl (downloaded at start) or spec.modelsVolume (a volume holding it)")))
    if isinstance(r.mapping("stt").get("model"), str):
        r.problems.append(SpecProblem("spec.stt.model", (
            "is not supported (the Vosk image's command names its model): choose the model with"
            " spec.stt.image, or spec.stt.args with a model on spec.modelsVolume")))
    tolerations = spec.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        r.problems.append(SpecProblem("spec.tolerations", "must be a list of objects"))
        tolerations = []
    node_selector = r.mapping("nodeSelector")
    if r.problems:
        return None, r.problems
    assert replicas is not None and max_calls is not None and rtp_ports is not None and drain is not None
    assert ctx is not None and set_id is not None and weight is not None and priority is not None
    assert max_tokens is not None
    assert image and pull and log_level and stt_image and tts_image and llm_image and voice and model
    return BotSpec(
        replicas=replicas,
        image=image,
        image_pull_policy=pull,
        sip_port=sip_port,
        max_calls=max_calls,
        trusted_proxies=proxies,
        rtp_ports=rtp_ports,
        system_prompt=str(r.string("assistant.systemPrompt", optional=True) or ""),
        greeting=str(r.string("assistant.greeting", optional=True) or ""),
        max_tokens=max_tokens,
        hangup_phrases=hangup_phrases,
        silence_timeout_secs=silence_timeout,
        llm_prefill=llm_prefill,
        preemptive_replies=preemptive,
        tts_first_chunk_secs=first_chunk,
        vad=vad,
        dtmf_map=dtmf,
        stt=Sidecar(stt_image, r.strings("stt.args"), r.mapping("stt.resources")),
        tts=Sidecar(tts_image, r.strings("tts.args"), r.mapping("tts.resources")),
        tts_voice=voice,
        llm=Sidecar(llm_image, r.strings("llm.args"), r.mapping("llm.resources")),
        llm_model=model,
        llm_model_url=model_url,
        llm_ctx_size=ctx,
        llm_parallel=parallel if parallel is not None else max_calls,
        models_volume=models_volume,
        otlp_endpoint=otlp,
        log_level=log_level,
        drain_grace_seconds=drain,
        dispatcher_set_id=set_id,
        dispatcher_weight=weight,
        dispatcher_priority=priority,
        resources=r.mapping("resources"),
        node_selector={str(k): str(v) for k, v in node_selector.items()},
        tolerations=tuple(tolerations),
        affinity=r.mapping("affinity"),
    ), []
