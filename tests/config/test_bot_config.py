"""Configuration: file then environment, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivrbot.config import ConfigError, load_config


def test_defaults_are_valid() -> None:
    cfg = load_config(env={})
    assert cfg.sip_port == 5060
    assert cfg.assistant_settings().vosk_url.startswith("ws://")


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "bot.yaml"
    f.write_text("sip_port: 5070\nmax_calls: 3\ntrusted_proxies: [10.0.0.0/8]\n")
    cfg = load_config(f, env={"IVRBOT_MAX_CALLS": "7", "IVRBOT_DTMF_MAP": '{"0": {"action": "hangup"}}'})
    assert cfg.sip_port == 5070
    assert cfg.max_calls == 7
    assert cfg.trusted_proxies == ("10.0.0.0/8",)
    assert cfg.assistant_settings().dtmf_map["0"].action == "hangup"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"IVRBOT_SIP_PORT": "70000"}, "sip_port"),
        ({"IVRBOT_MAX_CALLS": "many"}, "IVRBOT_MAX_CALLS"),
        ({"IVRBOT_TRUSTED_PROXIES": "10.0.0.0/33"}, "trusted_proxies"),
        ({"IVRBOT_RTP_PORT_MIN": "20000", "IVRBOT_RTP_PORT_MAX": "20000"}, "rtp_port_max"),
        ({"IVRBOT_DTMF_MAP": '{"x": {"action": "hangup"}}'}, "DTMF map"),
        ({"IVRBOT_ADVERTISED_ADDRESS": "pod.local"}, "advertised_address"),
        ({"IVRBOT_MAX_TOKENS": "0"}, "max_tokens"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(env=env)


def test_unknown_file_key_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "bot.yaml"
    f.write_text("sip_prot: 5070\n")
    with pytest.raises(ConfigError, match="unknown key 'sip_prot'"):
        load_config(f, env={})


def test_the_sidecars_and_the_stack_serve_where_the_bot_looks_by_default() -> None:
    """The default sidecar URLs are written once (AssistantSettings); the sidecars keep their own copy of the port."""
    from urllib.parse import urlsplit

    from ivrbot.assistant_settings import AssistantSettings
    from ivrbot.config import BotConfig
    from ivrbot_sidecars import piper_server, vosk_server
    from ivrbot_sidecars.llama import LlamaServerConfig
    from ivrbot_tools.stack import StackConfig

    bot = AssistantSettings()
    assert (BotConfig().vosk_url, BotConfig().piper_url, BotConfig().llama_url) == (
        bot.vosk_url, bot.piper_url, bot.llama_url
    )
    ports = {name: urlsplit(getattr(bot, f"{name}_url")).port for name in ("vosk", "piper", "llama")}
    assert ports == {
        "vosk": vosk_server.DEFAULT_PORT,
        "piper": piper_server.DEFAULT_PORT,
        "llama": LlamaServerConfig(model=Path("m.gguf")).port,
    }
    stack = StackConfig()
    assert (stack.vosk_url, stack.piper_url, stack.llama_url + "/v1") == (bot.vosk_url, bot.piper_url, bot.llama_url)


def test_llm_prefill_setting_reaches_the_assistant(tmp_path: Path) -> None:
    assert load_config(env={}).assistant_settings().llm_prefill is True
    assert load_config(env={"IVRBOT_LLM_PREFILL": "0"}).assistant_settings().llm_prefill is False
    f = tmp_path / "bot.yaml"
    f.write_text("llm_prefill: false\n")
    assert load_config(f, env={}).assistant_settings().llm_prefill is False


def test_preemptive_replies_setting_reaches_the_assistant(tmp_path: Path) -> None:
    assert load_config(env={}).assistant_settings().preemptive_replies is False
    assert load_config(env={"IVRBOT_PREEMPTIVE_REPLIES": "1"}).assistant_settings().preemptive_replies is True
    f = tmp_path / "bot.yaml"
    f.write_text("preemptive_replies: true\n")
    assert load_config(f, env={}).assistant_settings().preemptive_replies is True


def test_vad_pause_secs_reaches_the_assistant_and_must_be_shorter_than_the_stop() -> None:
    assert load_config(env={}).assistant_settings().vad.pause_secs == 0.15
    assert load_config(env={"IVRBOT_VAD_PAUSE_SECS": "0.1"}).assistant_settings().vad.pause_secs == 0.1
    for bad in ("0.3", "0.5", "-0.1"):
        with pytest.raises(ConfigError, match="vad_pause_secs"):
            load_config(env={"IVRBOT_VAD_PAUSE_SECS": bad})


def test_tts_first_chunk_secs_reaches_the_assistant_and_is_not_negative() -> None:
    assert load_config(env={}).assistant_settings().tts_first_chunk_secs == 0.0
    assert load_config(env={"IVRBOT_TTS_FIRST_CHUNK_SECS": "0.3"}).assistant_settings().tts_first_chunk_secs == 0.3
    for bad in ("-0.1", "nan"):
        with pytest.raises(ConfigError, match="tts_first_chunk_secs"):
            load_config(env={"IVRBOT_TTS_FIRST_CHUNK_SECS": bad})

