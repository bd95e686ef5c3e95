"""How a speech server runs as a command: until SIGINT/SIGTERM, with one clear line on failure."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from ivrbot_sidecars.logs import get_logger
from ivrbot_sidecars.process import SidecarError

log = get_logger(__name__)


class Server(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until(server: Server, stop: asyncio.Event | None = None) -> None:
    """Run `server` until `stop` is set (or the task is cancelled), then stop it."""
    await server.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()


def run_until_signal(name: str, make: Callable[[], Server]) -> int:
    """The body of `ivrbot <name>`: exit 0 on a signal, 1 with `error: ...` if it cannot serve."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_until(make(), stop)
        log.info(f"{name} stopped")

    try:
        asyncio.run(run())
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
