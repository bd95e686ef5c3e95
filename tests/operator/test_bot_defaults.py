"""The IVRBot schema's defaults are the bot's own defaults: a pod made from an IVRBot with no
`assistant.vad` must behave like `ivrbot serve` with no configuration."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

from ivrbot.assistant_settings import VadSettings


def _vad_schema() -> dict[str, Any]:
    crd = yaml.safe_load(
        files("ivrbot_operator").joinpath("crds/ivrbots.ivrbot.dev.yaml").read_text(encoding="utf-8")
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]["assistant"]["properties"]["vad"]
    return props["properties"]  # type: ignore[no-any-return]


def test_vad_defaults_match_the_bot() -> None:
    vad = _vad_schema()
    bot = VadSettings()
    assert vad["confidence"]["default"] == bot.confidence
    assert vad["startSecs"]["default"] == bot.start_secs
    assert vad["stopSecs"]["default"] == bot.stop_secs
    assert vad["minVolume"]["default"] == bot.min_volume
