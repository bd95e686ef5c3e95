"""/metrics, /healthz, /readyz and /drain over real HTTP; /metrics parsed by prometheus_client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivrbot.http_api import HttpApi, http_port_from_env
from ivrbot.metrics import Metrics
from ivrbot.telemetry.calls import CallTrace


@dataclass
class FakeRtpCounters:
    received: int = 0
    lost: int = 0
    late: int = 0
    malformed: int = 0
    sent: int = 0


@dataclass
class FakeSipStats:
    malformed: int = 0
    untrusted: int = 0
    internal_errors: int = 0
    app_timeouts: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


async def scrape(session: aiohttp.ClientSession, api: HttpApi) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with session.get(f"http://127.0.0.1:{api.port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def v(samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_metrics_scrape(client: aiohttp.ClientSession) -> None:
    metrics = Metrics()
    api = HttpApi(metrics, host="127.0.0.1", port=0)
    await api.start()
    try:
        assert api.port > 0
        s = await scrape(client, api)
        for stage in ("vad_to_stt", "stt_to_llm", "llm_to_tts", "tts_to_rtp"):
            assert v(s, "ivrbot_stage_latency_seconds_count", stage=stage) == 0
        assert v(s, "ivrbot_calls_active") == 0
        assert v(s, "ivrbot_rtp_packets_received_total") == 0

        metrics.call_answered()
        metrics.call_answered()
        metrics.call_ended("caller_bye")
        metrics.call_rejected("busy")
        metrics.call_rejected("busy")
        metrics.call_rejected("no_codec")
        metrics.sidecar_error("vosk")
        metrics.sip_message_malformed()
        # A live session is read at scrape time; a retired one stays in the totals.
        live = FakeRtpCounters(received=100, lost=2, late=1, malformed=3, sent=90)
        metrics.watch_rtp_session("call-a", lambda: live)
        done = FakeRtpCounters(received=50, sent=40)
        metrics.watch_rtp_session("call-b", lambda: done)
        metrics.retire_rtp_session("call-b")
        metrics.rtp_packets_sent(5)
        sip = FakeSipStats(malformed=4, untrusted=7)
        metrics.watch_sip(lambda: sip)
        ct = CallTrace("m1", metrics=metrics, t_start=0.0)
        ct.user_stopped_speaking(1.0)
        ct.transcript_final(1.25)
        ct.llm_first_token(1.35)
        ct.tts_first_audio(1.5)
        ct.mark_first_packet_sent(1.52)

        s = await scrape(client, api)
        assert v(s, "ivrbot_calls_active") == 1
        assert v(s, "ivrbot_calls_answered_total") == 2
        assert v(s, "ivrbot_calls_ended_total", reason="caller_bye") == 1
        assert v(s, "ivrbot_calls_rejected_total", reason="busy") == 2
        assert v(s, "ivrbot_calls_rejected_total", reason="no_codec") == 1
        assert v(s, "ivrbot_sidecar_errors_total", sidecar="vosk") == 1
        assert v(s, "ivrbot_rtp_packets_received_total") == 150
        assert v(s, "ivrbot_rtp_packets_lost_total") == 2
        assert v(s, "ivrbot_rtp_packets_late_total") == 1
        assert v(s, "ivrbot_rtp_packets_malformed_total") == 3
        assert v(s, "ivrbot_rtp_packets_sent_total") == 135
        assert v(s, "ivrbot_sip_messages_malformed_total") == 5
        assert v(s, "ivrbot_sip_requests_untrusted_total") == 7
        assert v(s, "ivrbot_stage_latency_seconds_count", stage="vad_to_stt") == 1
        assert v(s, "ivrbot_stage_latency_seconds_bucket", stage="vad_to_stt", le="0.25") == 1
        assert v(s, "ivrbot_stage_latency_seconds_bucket", stage="vad_to_stt", le="0.2") == 0
        assert v(s, "ivrbot_turn_latency_seconds_sum") == pytest.approx(0.52)

        live.received = 120  # counters move between scrapes; retiring keeps them monotonic
        metrics.retire_rtp_session("call-a")
        metrics.retire_rtp_session("call-a")  # twice is harmless
        s = await scrape(client, api)
        assert v(s, "ivrbot_rtp_packets_received_total") == 170
        with pytest.raises(ValueError):
            metrics.rtp_packets_lost(-1)
    finally:
        await api.stop()


async def test_health_readiness_and_unknown_path(client: aiohttp.ClientSession) -> None:
    state = {"vosk": True, "piper": True, "llama": False}

    async def readiness() -> Mapping[str, bool]:
        if state.get("boom"):
            raise RuntimeError("probe exploded")
        return state

    api = HttpApi(Metrics(), host="127.0.0.1", port=0, readiness=readiness)
    await api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        async with client.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        async with client.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
            assert body["ready"] is False and body["checks"]["llama"] is False
        state["llama"] = True
        async with client.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"vosk": True, "piper": True, "llama": True, "not_draining": True}
        state["boom"] = True
        async with client.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert "probe exploded" in (await resp.json())["error"]
        async with client.get(f"{base}/nope") as resp:
            assert resp.status == 404
        async with client.get(f"{base}/drain") as resp:
            assert resp.status == 501  # no drain function supplied
    finally:
        await api.stop()


async def test_readiness_timeout_is_not_ready(client: aiohttp.ClientSession) -> None:
    async def hangs() -> Mapping[str, bool]:
        await asyncio.Event().wait()
        return {}

    api = HttpApi(Metrics(), host="127.0.0.1", port=0, readiness=hangs, readiness_timeout_s=0.05)
    await api.start()
    try:
        async with client.get(f"http://127.0.0.1:{api.port}/readyz") as resp:
            assert resp.status == 503
            assert "timed out" in (await resp.json())["error"]
    finally:
        await api.stop()


async def test_drain_runs_once_and_answers_when_done(client: aiohttp.ClientSession) -> None:
    calls_ended = asyncio.Event()
    drain_started = asyncio.Event()
    runs = 0

    async def drain() -> None:
        nonlocal runs
        runs += 1
        drain_started.set()
        await calls_ended.wait()

    async def readiness() -> Mapping[str, bool]:
        return {"vosk": True}

    api = HttpApi(Metrics(), host="127.0.0.1", port=0, readiness=readiness, drain=drain)
    await api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:

        async def get_drain() -> tuple[int, dict[str, object]]:
            async with client.get(f"{base}/drain") as resp:
                return resp.status, await resp.json()

        first = asyncio.create_task(get_drain())
        second = asyncio.create_task(get_drain())
        await drain_started.wait()
        assert api.draining
        async with client.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["not_draining"] is False
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()  # still waiting for the live calls
        calls_ended.set()
        assert await first == (200, {"drained": True})
        assert await second == (200, {"drained": True})
        assert runs == 1
    finally:
        await api.stop()


async def test_stop_cancels_a_running_drain_and_frees_the_port(client: aiohttp.ClientSession) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def drain() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    api = HttpApi(Metrics(), host="127.0.0.1", port=0, drain=drain)
    await api.start()
    port = api.port
    pending = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/drain"))
    await started.wait()
    await api.stop()
    assert cancelled.is_set()
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    again = HttpApi(Metrics(), host="127.0.0.1", port=port)
    await again.start()  # the port was released
    await again.stop()


def test_http_port_from_env() -> None:
    assert http_port_from_env({}) == 9100
    assert http_port_from_env({"IVRBOT_HTTP_PORT": "9200"}) == 9200
    with pytest.raises(ValueError, match="IVRBOT_HTTP_PORT"):
        http_port_from_env({"IVRBOT_HTTP_PORT": "http"})
    with pytest.raises(ValueError, match="IVRBOT_HTTP_PORT"):
        http_port_from_env({"IVRBOT_HTTP_PORT": "70000"})
