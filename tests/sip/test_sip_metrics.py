"""The SIP core's drops and bugs on /metrics, over real UDP and real HTTP: monitoring sees attacks
(garbage, strays, untrusted sources) and bugs (internal errors) as they happen."""

from __future__ import annotations

import asyncio
from unittest import mock

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sipmsg import OFFER, request
from test_sip_server import Peer, SlowApp, _wait

from ivrbot.http_api import HttpApi
from ivrbot.metrics import Metrics
from ivrbot.sip.server import SipServer


async def _scrape(api: HttpApi) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{api.port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _dropped(reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("ivrbot_sip_datagrams_dropped_total", (("reason", reason),))


async def test_drops_and_internal_errors_are_exported() -> None:
    metrics = Metrics()
    server = SipServer("127.0.0.1", 0, SlowApp(), advertised_address="127.0.0.1")
    api = HttpApi(metrics, host="127.0.0.1", port=0)
    metrics.watch_sip(lambda: server.stats)
    await server.start()
    await api.start()
    peer = Peer()
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    try:
        s = await _scrape(api)
        assert s[("ivrbot_sip_internal_errors_total", ())] == 0
        for reason in ("malformed", "untrusted", "stray"):
            assert s[_dropped(reason)] == 0  # present from the start, so a rate() has a base
        via = f"127.0.0.1:{peer.port}"
        peer.send(b"\xff\xfegarbage with no Via\r\n\r\n", server)
        peer.send(f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:{server.port};branch=z9hG4bKnone\r\n"
                  "CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n".encode(), server)
        with mock.patch("ivrbot.sip.calls.parse_offer", side_effect=RuntimeError("bug")):
            peer.send(request("INVITE", body=OFFER, via_host=via), server)
            await peer.next_response(500)  # a bug still answers the INVITE
        await _wait(lambda: server.stats.dropped["stray"] == 1 and server.stats.dropped["malformed"] == 1)
        s = await _scrape(api)
        assert s[("ivrbot_sip_internal_errors_total", ())] == 1
        assert s[_dropped("malformed")] == 1
        assert s[_dropped("stray")] == 1
        assert s[("ivrbot_sip_messages_malformed_total", ())] == 1
    finally:
        assert peer.transport is not None
        peer.transport.close()
        await api.stop()
        await server.stop()
