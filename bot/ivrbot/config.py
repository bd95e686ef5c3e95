"""`ivrbot serve` configuration: defaults, then a YAML file, then IVRBOT_* environment variables.

Every key of the file is a field name below; every environment variable is IVRBOT_<FIELD>. A bad
value is refused at start with a message naming the key, never at the first call.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ivrbot.assistant_settings import AssistantSettings, VadSettings, parse_dtmf_map
from ivrbot.vad import check_vad


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


@dataclass(frozen=True)
class BotConfig:
    sip_host: str = "0.0.0.0"
    sip_port: int = 5060
    #: address put in SDP c= and Contact; must be routable from the proxy and the caller
    advertised_address: str = ""
    rtp_port_min: int = 20000
    rtp_port_max: int = 20099
    max_calls: int = 20
    #: CIDRs allowed to send SIP; empty accepts every source
    trusted_proxies: tuple[str, ...] = ()
    #: /healthz, /readyz, /drain and /metrics; loopback: /drain takes the bot out of service
    http_host: str = "127.0.0.1"
    http_port: int = 9100
    #: also serve /metrics (only) on this address, same port (a pod: its node address, for Prometheus)
    metrics_host: str = ""
    drain_grace_seconds: float = 60.0
    vosk_url: str = AssistantSettings.vosk_url
    piper_url: str = AssistantSettings.piper_url
    llama_url: str = AssistantSettings.llama_url
    system_prompt: str = ""
    greeting: str = ""
    max_tokens: int = AssistantSettings.max_tokens
    llm_first_token_timeout_secs: float = AssistantSettings.llm_first_token_timeout_secs
    llm_stall_timeout_secs: float = AssistantSettings.llm_stall_timeout_secs
    vad_confidence: float = VadSettings.confidence
    vad_start_secs: float = VadSettings.start_secs
    vad_stop_secs: float = VadSettings.stop_secs
    vad_min_volume: float = VadSettings.min_volume
    vad_pause_secs: float = VadSettings.pause_secs
    dtmf_map: dict[str, dict[str, str]] = field(default_factory=dict)
    hangup_phrases: tuple[str, ...] = AssistantSettings.hangup_phrases
    silence_timeout_secs: float = AssistantSettings.silence_timeout_secs
    stt_stall_timeout_secs: float = AssistantSettings.stt_stall_timeout_secs
    preemptive_replies: bool = AssistantSettings.preemptive_replies
    llm_prefill: bool = AssistantSettings.llm_prefill
    tts_first_chunk_secs: float = AssistantSettings.tts_first_chunk_secs
    #: echo caller audio back instead of running the assistant (media tests, network checks)
    echo: bool = False

    def assistant_settings(self) -> AssistantSettings:
        base = AssistantSettings()
        return replace(
            base,
            vosk_url=self.vosk_url,
            piper_url=self.piper_url,
            llama_url=self.llama_url,
            system_prompt=self.system_prompt or base.system_prompt,
            greeting=self.greeting,
            max_tokens=self.max_tokens,
            llm_first_token_timeout_secs=self.llm_first_token_timeout_secs,
            llm_stall_timeout_secs=self.llm_stall_timeout_secs,
            vad=VadSettings(
                confidence=self.vad_confidence,
                start_secs=self.vad_start_secs,
                stop_secs=self.vad_stop_secs,
                min_volume=self.vad_min_volume,
                pause_secs=self.vad_pause_secs,
            ),
            dtmf_map=parse_dtmf_map(self.dtmf_map),
            hangup_phrases=self.hangup_phrases,
            silence_timeout_secs=self.silence_timeout_secs,
            stt_stall_timeout_secs=self.stt_stall_timeout_secs,
            preemptive_replies=self.preemptive_replies,
            llm_prefill=self.llm_prefill,
            tts_first_chunk_secs=self.tts_first_chunk_secs,
        )

    def validate(self) -> BotConfig:
        for name in ("sip_port", "http_port", "rtp_port_min", "rtp_port_max"):
            v = getattr(self, name)
            if not 1 <= v <= 65535:
                raise ConfigError(f"{name}: {v} is not a port number (1-65535)")
        if self.rtp_port_max - self.rtp_port_min < 1:
            raise ConfigError(f"rtp_port_max: the range {self.rtp_port_min}-{self.rtp_port_max} holds no RTP/RTCP pair")
        if not self.stt_stall_timeout_secs > 0:
            raise ConfigError(f"stt_stall_timeout_secs: must be > 0, got {self.stt_stall_timeout_secs}")
        if not 0 <= self.vad_pause_secs < self.vad_stop_secs:
            raise ConfigError(
                f"vad_pause_secs: must be >= 0 and shorter than vad_stop_secs ({self.vad_stop_secs}), "
                f"got {self.vad_pause_secs}"
            )
        if self.max_calls < 1:
            raise ConfigError(f"max_calls: must be at least 1, got {self.max_calls}")
        try:
            # what every call's VAD set-up would refuse, refused once at start
            check_vad(self.assistant_settings().vad, AssistantSettings.audio_in_sample_rate)
        except ValueError as exc:
            raise ConfigError(f"vad_*: {exc}") from exc
        if self.max_tokens < 1:
            # the LLM service refuses it too, but only when a call builds it: every call would fail
            raise ConfigError(f"max_tokens: must be at least 1, got {self.max_tokens}")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ConfigError(f"trusted_proxies: {cidr!r} is not a CIDR: {exc}") from exc
        for name in ("http_host", "metrics_host"):
            value = getattr(self, name)
            if value:
                try:
                    ipaddress.ip_address(value)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {value!r} is not an IP address") from exc
        if not self.tts_first_chunk_secs >= 0:
            raise ConfigError(f"tts_first_chunk_secs: must be >= 0, got {self.tts_first_chunk_secs}")
        for name in ("llm_first_token_timeout_secs", "llm_stall_timeout_secs"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be a positive number of seconds, got {getattr(self, name)}")
        if self.advertised_address:
            try:
                ipaddress.ip_address(self.advertised_address)
            except ValueError as exc:
                raise ConfigError(f"advertised_address: {self.advertised_address!r} is not an IP address") from exc
        try:
            self.assistant_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return self


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            if isinstance(raw, (list, tuple)):
                return tuple(str(x).strip() for x in raw if str(x).strip())
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        if isinstance(default, dict):
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        return str(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: cannot use {raw!r}: {exc}") from exc


def load_config(path: Path | None = None, env: dict[str, str] | None = None) -> BotConfig:
    """Defaults <- YAML file (IVRBOT_CONFIG or `path`) <- IVRBOT_* variables, validated."""
    env = dict(os.environ if env is None else env)
    defaults = BotConfig()
    values: dict[str, Any] = {}
    file_path = path or (Path(env["IVRBOT_CONFIG"]) if env.get("IVRBOT_CONFIG") else None)
    known = {f.name for f in fields(BotConfig)}
    if file_path is not None:
        try:
            data = yaml.safe_load(file_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {file_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file_path}: expected a mapping of keys to values")
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"config file {file_path}: unknown key {key!r}")
            values[key] = _coerce(key, raw, getattr(defaults, key))
    for name in known:
        raw = env.get(f"IVRBOT_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(f"IVRBOT_{name.upper()}", raw, getattr(defaults, name))
    return replace(defaults, **values).validate()
