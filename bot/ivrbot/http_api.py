"""The bot's small HTTP server: ``/metrics``, ``/healthz``, ``/readyz`` and ``/drain``.

- ``/healthz``: the event loop answers, so the process is alive (Kubernetes liveness).
- ``/readyz``: 200 when every named check of the supplied readiness callback is true
  (sidecars reachable, not draining), else 503 with the failing checks (readiness).
- ``GET /drain`` (POST too): runs the supplied drain coroutine once, however many requests
  ask, and answers when it returns (live calls ended or grace over). It is the pod's preStop
  ``httpGet``; a client that hangs up does not stop the drain.

All four listen on ``host`` (loopback by default: a bot pod uses the host network, so any other
address is the node's, reachable by anyone who can route to it, and ``/drain`` takes the bot out
of service). The kubelet reaches loopback under hostNetwork (probes and preStop with
``host: 127.0.0.1``). ``metrics_host``, when set, serves ``/metrics`` alone on that address and
the same port, for Prometheus; the control endpoints answer 404 there.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from ivrbot.logs import get_logger
from ivrbot.metrics import CONTENT_TYPE, Metrics

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]
DrainFn = Callable[[], Awaitable[None]]

DEFAULT_PORT = 9100
READINESS_TIMEOUT_S = 2.0

log = get_logger(__name__)


def http_port_from_env(env: Mapping[str, str] | None = None) -> int:
    """``IVRBOT_HTTP_PORT`` (default 9100), validated."""
    env = os.environ if env is None else env
    raw = env.get("IVRBOT_HTTP_PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError as exc:
        raise ValueError(f"IVRBOT_HTTP_PORT: not a port number: {raw!r}") from exc
    if not 0 <= port <= 65535:
        raise ValueError(f"IVRBOT_HTTP_PORT: out of range: {port}")
    return port


class HttpApi:
    """aiohttp server with ``start()``/``stop()``; ``port`` is the bound port (useful with port 0)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        metrics_host: str = "",
        readiness: ReadinessCheck | None = None,
        drain: DrainFn | None = None,
        readiness_timeout_s: float = READINESS_TIMEOUT_S,
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.metrics_host = metrics_host if metrics_host != host else ""
        self._port = port
        self._readiness = readiness
        self._drain = drain
        self._readiness_timeout_s = readiness_timeout_s
        self._drain_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", self._get_metrics)
        self._metrics_app = metrics_app
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        app.router.add_get("/drain", self._drain_handler)
        app.router.add_post("/drain", self._drain_handler)
        self._app = app

    @property
    def port(self) -> int:
        return self._port

    @property
    def draining(self) -> bool:
        return self._drain_task is not None

    async def start(self) -> None:
        # No access log: Prometheus and the kubelet call every few seconds.
        runner = await self._serve(self._app, self.host, self._port)
        self._runner = runner
        addresses = runner.addresses  # tells which port "port 0" became
        if addresses:
            self._port = int(addresses[0][1])
        if self.metrics_host:
            try:
                self._metrics_runner = await self._serve(self._metrics_app, self.metrics_host, self._port)
            except BaseException:
                await self.stop()
                raise
        log.info("http api listening", host=self.host, port=self._port, metrics_host=self.metrics_host or None)

    @staticmethod
    async def _serve(app: web.Application, host: str, port: int) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    async def stop(self) -> None:
        task, self._drain_task = self._drain_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for runner in (self._metrics_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None

    async def _get_metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _get_healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _get_readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, bool] = {}
        error = ""
        if self._readiness is not None:
            try:
                async with asyncio.timeout(self._readiness_timeout_s):
                    checks = dict(await self._readiness())
            except TimeoutError:
                error = "readiness check timed out"
            except Exception as exc:
                error = f"readiness check failed: {exc!r}"
        checks["not_draining"] = checks.get("not_draining", True) and not self.draining
        ready = not error and all(checks.values())
        body: dict[str, object] = {"ready": ready, "checks": checks}
        if error:
            body["error"] = error
        return web.json_response(body, status=200 if ready else 503, dumps=json.dumps)

    async def _run_drain(self) -> None:
        assert self._drain is not None
        await self._drain()
        log.info("drain finished")

    async def _drain_handler(self, request: web.Request) -> web.Response:
        if self._drain is None:
            return web.json_response({"drained": False, "error": "draining not supported"}, status=501)
        if self._drain_task is None:
            log.info("drain requested", peer=request.remote)
            self._drain_task = asyncio.get_running_loop().create_task(self._run_drain(), name="ivrbot-drain")
        task = self._drain_task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                return web.json_response({"drained": False, "error": "drain cancelled"}, status=503)
            raise
        except Exception as exc:
            log.error("drain failed", error=repr(exc))
            return web.json_response({"drained": False, "error": repr(exc)}, status=500)
        return web.json_response({"drained": True})
