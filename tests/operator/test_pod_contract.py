"""The pod contract: every IVRBOT_* variable the operator puts on a bot pod is one the bot reads.

The operator writes these names as literals and the bot parses them in its own package; nothing else
ties the two together, so a renamed setting would silently fall back to the bot's default in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot.config import BotConfig, load_config
from ivrbot_operator.desired import Owner, desired_pod
from ivrbot_operator.ports import PodPorts, PortPool
from ivrbot_operator.spec import BotSpec, parse_spec

BOT_SRC = Path(__file__).resolve().parents[2] / "bot" / "ivrbot"
SIDECARS_SRC = Path(__file__).resolve().parents[2] / "sidecars" / "ivrbot_sidecars"
POOL = PortPool(20000, 20999)
OWNER = Owner(name="alpha", namespace="voice", uid="uid-1")
#: what the kubelet puts into fieldRef variables, for the loader
FIELD_VALUES = {"status.hostIP": "10.0.0.7", "status.podIP": "10.0.0.7", "metadata.name": "alpha-0",
                "spec.nodeName": "node-1", "metadata.namespace": "voice", "metadata.uid": "pod-uid-1"}
MODELS = {"persistentVolumeClaim": {"claimName": "ivrbot-models"}}
SPECS: list[dict[str, Any]] = [
    {"modelsVolume": MODELS},
    {"modelsVolume": MODELS, "sip": {"maxCalls": 3, "trustedProxies": ["10.0.0.0/8"]},
     "assistant": {"greeting": "Hi", "systemPrompt": "Be brief.", "dtmfMap": {"1": {"action": "say", "text": "Sales"}},
                   "maxTokens": 40, "hangupPhrases": ["so long", "bye"], "silenceTimeoutSecs": 0,
                   "llmPrefill": False, "preemptiveReplies": True, "ttsFirstChunkSecs": 0.3,
                   "vad": {"confidence": 0.5, "startSecs": 0.2, "stopSecs": 0.5, "minVolume": 0.3, "pauseSecs": 0.2}},
     "otlpEndpoint": "http://jaeger:4317", "drainGraceSeconds": 30},
]


def bot_env(raw: dict[str, Any]) -> dict[str, str]:
    spec, problems = parse_spec(raw, POOL)
    assert spec is not None, problems
    pod = desired_pod(OWNER, spec, 0, PodPorts(base=20000, rtp_ports=16))
    bot = next(c for c in pod["spec"]["containers"] if c["name"] == "bot")
    env: dict[str, str] = {}
    for e in bot["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = FIELD_VALUES[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def names_the_bot_reads_outside_its_config() -> set[str]:
    found: set[str] = set()
    for path in BOT_SRC.rglob("*.py"):
        text = path.read_text()
        found.update(word.strip("\"'") for word in text.replace("(", " ").replace(",", " ").split()
                     if word.strip("\"'").startswith("IVRBOT_"))
    return found


@pytest.mark.parametrize("raw", SPECS, ids=["defaults", "everything-set"])
def test_every_ivrbot_variable_on_the_pod_is_read_by_the_bot(raw: dict[str, Any]) -> None:
    env = bot_env(raw)
    config_names = {f"IVRBOT_{name.upper()}" for name in BotConfig.__dataclass_fields__}
    elsewhere = names_the_bot_reads_outside_its_config()
    unknown = sorted(n for n in env if n.startswith("IVRBOT_") and n not in config_names and n not in elsewhere)
    assert unknown == [], f"the operator sets variables the bot never reads: {unknown}"


@pytest.mark.parametrize("raw", SPECS, ids=["defaults", "everything-set"])
def test_the_bot_loads_the_operators_pod_env(raw: dict[str, Any]) -> None:
    env = bot_env(raw)
    config = load_config(env=env)
    assert config.sip_port == int(env["IVRBOT_SIP_PORT"]) and config.http_port == int(env["IVRBOT_HTTP_PORT"])
    assert (config.rtp_port_min, config.rtp_port_max) == (int(env["IVRBOT_RTP_PORT_MIN"]),
                                                          int(env["IVRBOT_RTP_PORT_MAX"]))
    assert config.advertised_address == "10.0.0.7"
    assert config.vosk_url == env["IVRBOT_VOSK_URL"] and config.llama_url == env["IVRBOT_LLAMA_URL"]
    assert config.max_calls == int(env["IVRBOT_MAX_CALLS"])
    spec, _ = parse_spec(raw, POOL)
    assert spec is not None
    assert_bot_runs_the_spec(config, spec)


def assert_bot_runs_the_spec(config: BotConfig, spec: BotSpec) -> None:
    """Every assistant setting of the IVRBot is the one the bot loaded from the pod's env."""
    assert (config.system_prompt, config.greeting) == (spec.system_prompt, spec.greeting)
    assert config.max_tokens == spec.max_tokens
    assert config.hangup_phrases == spec.hangup_phrases
    assert config.silence_timeout_secs == spec.silence_timeout_secs
    assert (config.llm_prefill, config.preemptive_replies) == (spec.llm_prefill, spec.preemptive_replies)
    assert config.tts_first_chunk_secs == spec.tts_first_chunk_secs
    assert (config.vad_confidence, config.vad_start_secs, config.vad_stop_secs, config.vad_min_volume,
            config.vad_pause_secs) == (spec.vad["confidence"], spec.vad["startSecs"], spec.vad["stopSecs"],
                                       spec.vad["minVolume"], spec.vad["pauseSecs"])
    assert config.dtmf_map == spec.dtmf_map


# values around every bound the schema, the operator or the bot draws, and the classes that broke before
# 0.16 / 0.15 and 0.3 / 0.28 are a stop and a pause in the same number of 32 ms Silero windows
secs = st.one_of(st.sampled_from([0, 0.0, 0.016, 0.05, 0.1, 0.15, 0.16, 0.28, 0.3, 5, 5.01, -0.1]),
                 st.floats(-1, 6, allow_nan=False))
unit = st.one_of(st.sampled_from([0, 1, 0.6, 1.01, -0.01]), st.floats(-0.5, 1.5, allow_nan=False))
phrase = st.one_of(st.sampled_from(["goodbye", "bye, then", " ", "", "안녕히 계세요", "bye\nnow", "good  bye"]),
                   st.text(max_size=12))
assistant = st.fixed_dictionaries({}, optional={
    "maxTokens": st.one_of(st.sampled_from([0, 1, 60, 4096, 4097]), st.integers(-5, 5000), st.booleans()),
    "hangupPhrases": st.lists(phrase, max_size=3),
    "silenceTimeoutSecs": st.one_of(secs, st.sampled_from([86400, 86401])),
    "llmPrefill": st.one_of(st.booleans(), st.sampled_from(["true", 1, None])),
    "preemptiveReplies": st.one_of(st.booleans(), st.sampled_from(["false", 0])),
    "ttsFirstChunkSecs": secs,
    "greeting": st.text(max_size=20),
    "vad": st.fixed_dictionaries({}, optional={"confidence": unit, "startSecs": secs, "stopSecs": secs,
                                               "minVolume": unit, "pauseSecs": secs}),
})


@given(assistant=assistant)
@settings(max_examples=500, deadline=None)
def test_an_assistant_spec_the_operator_accepts_is_one_the_bot_starts_with(assistant: dict[str, Any]) -> None:
    """The operator must refuse, naming the field, whatever would make the bot refuse to start: an
    accepted IVRBot whose pods crash-loop is the failure an operator under pressure cannot read."""
    raw = {"modelsVolume": MODELS, "assistant": assistant}
    spec, problems = parse_spec(raw, POOL)
    if spec is None:
        assert problems and all(p.field.startswith("spec.assistant.") for p in problems), problems
        return
    config = load_config(env=bot_env(raw))  # raises ConfigError if the bot would refuse
    assert_bot_runs_the_spec(config, spec)


@pytest.mark.parametrize("raw", SPECS, ids=["defaults", "everything-set"])
def test_the_vosk_sidecar_env_is_read_by_the_vosk_server_and_warms_one_recognizer_per_call(raw: dict[str, Any]) -> None:
    spec, problems = parse_spec(raw, POOL)
    assert spec is not None, problems
    pod = desired_pod(OWNER, spec, 0, PodPorts(base=20000, rtp_ports=16))
    vosk = next(c for c in pod["spec"]["initContainers"] if c["name"] == "vosk")
    env = {e["name"]: e["value"] for e in vosk["env"] if "value" in e}
    server_src = (SIDECARS_SRC / "vosk_server.py").read_text()
    unread = sorted(n for n in env if n.startswith("VOSK_") and f'"{n}"' not in server_src)
    assert unread == [], f"the operator sets variables the vosk server never reads: {unread}"
    assert env["VOSK_WARM_RECOGNIZERS"] == str(spec.max_calls)
