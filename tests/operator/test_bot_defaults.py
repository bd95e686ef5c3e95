"""The IVRBot schema's defaults are the bot's own defaults: a pod made from an IVRBot with no
`assistant` settings must behave like `ivrbot serve` with no configuration (the greeting aside: a
deployed bot greets its callers, a local one by default does not)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

from ivrbot.assistant_settings import AssistantSettings, VadSettings


def _assistant_schema() -> dict[str, Any]:
    crd = yaml.safe_load(
        files("ivrbot_operator").joinpath("crds/ivrbots.ivrbot.dev.yaml").read_text(encoding="utf-8")
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["assistant"]["properties"]  # type: ignore[no-any-return]


def _vad_schema() -> dict[str, Any]:
    return _assistant_schema()["vad"]["properties"]  # type: ignore[no-any-return]


def test_vad_defaults_match_the_bot() -> None:
    vad = _vad_schema()
    bot = VadSettings()
    assert vad["confidence"]["default"] == bot.confidence
    assert vad["startSecs"]["default"] == bot.start_secs
    assert vad["stopSecs"]["default"] == bot.stop_secs
    assert vad["minVolume"]["default"] == bot.min_volume
    assert vad["pauseSecs"]["default"] == bot.pause_secs


def test_assistant_defaults_match_the_bot() -> None:
    """The prompt and the reply settings were tuned for latency on the bot's side (docs/benchmarks.md);
    an IVRBot that says nothing about them must get the same."""
    schema = _assistant_schema()
    bot = AssistantSettings()
    assert schema["systemPrompt"]["default"] == bot.system_prompt
    assert schema["maxTokens"]["default"] == bot.max_tokens
    assert tuple(schema["hangupPhrases"]["default"]) == bot.hangup_phrases
    assert schema["silenceTimeoutSecs"]["default"] == bot.silence_timeout_secs
    assert schema["llmPrefill"]["default"] is bot.llm_prefill
    assert schema["preemptiveReplies"]["default"] is bot.preemptive_replies
    assert schema["ttsFirstChunkSecs"]["default"] == bot.tts_first_chunk_secs
