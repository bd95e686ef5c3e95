"""`ivrbot serve`: the bot process. Tracing, metrics, the HTTP API, the SIP endpoint and the call
manager, started in order by ``BotServer.start()`` and released by ``stop()``; drain on SIGTERM; the CLI.

What happens to a call is in ``ivrbot.call_manager``; what runs on its media, in ``ivrbot.call_pipeline``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import replace
from pathlib import Path

from ivrbot.apology import render_apology
from ivrbot.call_manager import CallLimits, CallManager
from ivrbot.call_pipeline import pipeline_factory
from ivrbot.config import BotConfig, ConfigError, load_config
from ivrbot.host_address import default_advertised_address
from ivrbot.http_api import HttpApi
from ivrbot.logs import get_logger
from ivrbot.memory import freeze_long_lived
from ivrbot.metrics import Metrics
from ivrbot.services.llama_llm import LlamaLLMService
from ivrbot.sidecar_probe import reachable
from ivrbot.sip.server import SipServer
from ivrbot.telemetry.budget import LatencyBudget
from ivrbot.telemetry.setup import configure_tracing

log = get_logger(__name__)


class BotServer:
    """The whole bot process: tracing, metrics, HTTP, SIP, calls; `stop()` releases all of it."""

    def __init__(self, config: BotConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.tracing = configure_tracing()
        self.settings = config.assistant_settings()
        self.apology = render_apology(self.settings.apology_text)
        self.advertised = config.advertised_address or default_advertised_address()
        limits = CallLimits.from_config(config, self.advertised)
        pipelines = pipeline_factory(
            echo=config.echo, settings=self.settings, apology=self.apology, tracing=self.tracing.enabled
        )
        self.calls = CallManager(limits, pipelines, metrics=self.metrics, tracing=self.tracing)
        self.sip = SipServer(
            config.sip_host,
            config.sip_port,
            self.calls,
            advertised_address=self.advertised,
            trusted_proxies=config.trusted_proxies,
        )
        self.metrics.watch_sip(lambda: self.sip.stats)
        self.metrics.watch_process(lambda: len(asyncio.all_tasks()), lambda: self.calls.ports.in_use)
        self.http = HttpApi(
            self.metrics,
            host=config.http_host,
            port=config.http_port,
            metrics_host=config.metrics_host,
            readiness=self.readiness,
            drain=self.drain,
        )
        self._drain_lock = asyncio.Lock()
        self._warm = asyncio.Event()
        self._warm_task: asyncio.Task[None] | None = None

    async def readiness(self) -> dict[str, bool]:
        checks = {"not_draining": not self.sip.draining, "warmed_up": self._warm.is_set()}
        if not self.config.echo:
            s = self.config
            vosk, piper, llama = await asyncio.gather(
                reachable(s.vosk_url), reachable(s.piper_url), reachable(s.llama_url)
            )
            checks.update({"vosk": vosk, "piper": piper, "llama": llama})
        return checks

    async def start(self) -> None:
        c = self.config
        try:
            await self.http.start()
        except OSError as exc:
            raise OSError(f"HTTP port {c.http_host}:{c.http_port}: {exc.strerror or exc}") from exc
        try:
            await self.sip.start()
        except OSError as exc:
            await self.http.stop()
            raise OSError(f"SIP port udp {c.sip_host}:{c.sip_port}: {exc.strerror or exc}") from exc
        log.info(
            "bot listening",
            sip=f"{self.config.sip_host}:{self.sip.port}",
            http=self.http.port,
            advertised=self.advertised,
            rtp=f"{self.config.rtp_port_min}-{self.config.rtp_port_max}",
            mode="echo" if self.config.echo else "assistant",
        )
        if self.config.echo:
            self._ready()
        else:
            self._warm_task = asyncio.create_task(self.warm_up(), name="llm-warm-up")

    async def warm_up(self) -> None:
        """Cache the calls' fixed prompt prefix; the bot is not ready until it is (or gave up)."""
        s = self.settings
        llm = LlamaLLMService(
            base_url=s.llama_url, system_prompt=s.system_prompt, model=s.llm_model, max_tokens=s.max_tokens
        )
        try:
            for attempt in range(30):  # the sidecar may still be loading its model
                try:
                    await llm.warm_up(greeting=s.greeting)
                    break
                except Exception as exc:
                    if attempt == 0:
                        log.warning("llm warm-up failed; retrying", error=str(exc))
                    await asyncio.sleep(2.0)
        finally:
            with contextlib.suppress(Exception):
                await llm._client.close()  # the service is used outside a pipeline: close its HTTP pool
        self._ready()

    def _ready(self) -> None:
        freeze_long_lived()  # what lives as long as the bot stays out of every call's collection
        self._warm.set()

    async def drain(self) -> None:
        """Stop taking calls; wait for live calls to end, up to the grace period; then end the rest."""
        async with self._drain_lock:
            self.sip.start_draining()
            log.info("draining", calls=len(self.calls.calls), grace=self.config.drain_grace_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.calls.idle.wait(), self.config.drain_grace_seconds)
            if self.calls.calls:
                log.warning("drain grace over; ending calls", calls=len(self.calls.calls))
                await self.calls.hangup_all()

    async def stop(self) -> None:
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
        await self.calls.stop()
        await self.sip.stop()
        await self.http.stop()
        await asyncio.to_thread(self.tracing.shutdown)


async def serve(config: BotConfig) -> int:
    server = BotServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    term = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, term.set)
    try:
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(term.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if term.is_set():  # Kubernetes: finish live calls within the grace period
            await server.drain()
    finally:
        await server.stop()
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ivrbot serve", description="Run the bot: SIP endpoint + one pipeline per call.")
    p.add_argument("--config", type=Path, help="YAML file (keys: docs/configuration.md); env IVRBOT_* wins")
    p.add_argument("--echo", action="store_true", help="echo caller audio instead of the assistant")
    a = p.parse_args(argv)
    try:
        config = load_config(a.config)
        if a.echo:
            config = replace(config, echo=True)
        LatencyBudget.from_env()  # IVRBOT_BUDGET_*_MS: refuse a bad value now, not at the first call
    except (ConfigError, ValueError) as exc:
        print(f"ivrbot serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config))
    except OSError as exc:
        print(f"ivrbot serve: {exc}", file=sys.stderr)
        return 1
