"""The bot's control endpoints are on loopback only; /metrics alone may be served on another address.

A bot pod uses the host network: any address but loopback is the node's, and /drain there would let
anyone who can route to the node take the bot out of service. 127.0.0.2 stands in for the node's
address (it is not the bound 127.0.0.1, and the test sends nothing off loopback).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from ivrbot.config import BotConfig, ConfigError, load_config
from ivrbot.http_api import HttpApi
from ivrbot.metrics import Metrics

OTHER = "127.0.0.2"


async def _status(url: str) -> int:
    """The HTTP status, or 0 when the connection is refused."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
            s.get(url) as r,
        ):
            return r.status
    except aiohttp.ClientConnectorError:
        return 0


async def _drained() -> None:
    return None


@pytest.fixture
async def api_from_config() -> AsyncIterator[HttpApi]:
    """The API as `ivrbot serve` builds it from its configuration defaults (port 0: a free one)."""
    config = load_config(env={"IVRBOT_HTTP_PORT": "1"})
    api = HttpApi(Metrics(), host=config.http_host, port=0, metrics_host=config.metrics_host, drain=_drained)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


async def test_by_default_nothing_listens_beyond_loopback(api_from_config: HttpApi) -> None:
    api = api_from_config
    assert await _status(f"http://127.0.0.1:{api.port}/healthz") == 200
    for path in ("/drain", "/readyz", "/healthz", "/metrics"):
        assert await _status(f"http://{OTHER}:{api.port}{path}") == 0, path


async def test_the_metrics_address_serves_metrics_and_no_control_endpoint() -> None:
    api = HttpApi(Metrics(), host="127.0.0.1", port=0, metrics_host=OTHER, drain=_drained)
    await api.start()
    try:
        assert await _status(f"http://{OTHER}:{api.port}/metrics") == 200
        for path in ("/drain", "/readyz", "/healthz"):
            assert await _status(f"http://{OTHER}:{api.port}{path}") == 404, path
        assert not api.draining
        assert await _status(f"http://127.0.0.1:{api.port}/drain") == 200
        assert api.draining
    finally:
        await api.stop()
    assert await _status(f"http://{OTHER}:{api.port}/metrics") == 0  # stop() closed both listeners


def test_config_defaults_and_validation() -> None:
    assert BotConfig().http_host == "127.0.0.1" and BotConfig().metrics_host == ""
    assert load_config(env={"IVRBOT_METRICS_HOST": "10.1.2.3"}).metrics_host == "10.1.2.3"
    with pytest.raises(ConfigError, match="metrics_host"):
        load_config(env={"IVRBOT_METRICS_HOST": "node-1"})
