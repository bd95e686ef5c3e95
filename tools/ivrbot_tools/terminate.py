"""``asyncio.run`` for the developer tools, where SIGTERM stops the servers a tool started.

The tools start Vosk, Piper, llama-server and a bot as child processes in their own sessions (so
a Ctrl-C in the terminal reaches only the tool, which then stops them in order). Python's default
SIGTERM kills the tool at once, before any ``async with`` can stop its children: a `kill`, a CI
timeout or a closed terminal left the whole stack running. Here SIGTERM and SIGHUP cancel the
main task instead, so the context managers unwind and stop what they started.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(Exception):
    """The tool was asked to stop (SIGTERM/SIGHUP); what it started has been stopped."""

    exit_code = 143


def run[T](main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; a SIGTERM/SIGHUP cancels ``main`` and raises ``Terminated`` after it unwound."""
    got: list[int] = []

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def stop(sig: int) -> None:
            got.append(sig)
            task.cancel()

        for sig in SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await main
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if got:
            raise Terminated(f"stopped by signal {signal.Signals(got[0]).name}") from None
        raise
