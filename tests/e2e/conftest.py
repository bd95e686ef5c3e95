"""Fixtures for the end-to-end tests: the speech stack once for the whole folder, bots per module.

The stack (vosk-server, piper-server, llama-server as real processes) is package-scoped, so it
loads its models once; each module starts its own `ivrbot serve` process with the settings it
tests (greeting, DTMF map) pointing at that stack. Tests that stop a sidecar restart it, and the
`speech_stack` fixture checks before every test that all three are running.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ivrbot_tools.local import LocalBot, LocalBotConfig, free_port
from ivrbot_tools.stack import Stack, StackConfig

from .support import SharedStackBot

# tests/sipp holds the sipp runner and scenarios these tests reuse (not a package: put it on the path)
SIPP_DIR = Path(__file__).resolve().parent.parent / "sipp"
if str(SIPP_DIR) not in sys.path:
    sys.path.insert(0, str(SIPP_DIR))

@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def _stack() -> AsyncIterator[Stack]:
    stack = Stack(StackConfig(vosk_port=free_port(), piper_port=free_port(), llama_port=free_port()))
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


@pytest_asyncio.fixture(loop_scope="package")
async def speech_stack(_stack: Stack) -> Stack:
    """The running stack; a sidecar a previous test left stopped (it failed half-way) is started again."""
    for proc in _stack.processes:
        if not proc.running:
            await proc.start()
    return _stack


class BotFactory:
    """Starts `ivrbot serve` processes for one module and stops them all at its end."""

    def __init__(self, tmp: pytest.TempPathFactory, stack: Stack | None) -> None:
        self._tmp = tmp
        self._stack = stack
        self.bots: list[LocalBot] = []

    async def __call__(self, *, max_calls: int = 4, rtp_ports: int = 40, **env: str) -> LocalBot:
        """An echo bot when there is no stack, else the assistant on the shared stack; `env`: IVRBOT_*."""
        config = LocalBotConfig(
            log_path=self._tmp.mktemp("bot") / "bot.log",
            echo=self._stack is None,
            max_calls=max_calls,
            rtp_ports=rtp_ports,
            env=env,
        )
        bot = LocalBot(config) if self._stack is None else SharedStackBot(config, self._stack)
        await bot.start()
        self.bots.append(bot)
        return bot

    async def stop(self) -> None:
        for bot in self.bots:
            await bot.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def make_echo_bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BotFactory]:
    """`ivrbot serve --echo` processes (no speech stack needed)."""
    factory = BotFactory(tmp_path_factory, None)
    try:
        yield factory
    finally:
        await factory.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def make_bot(tmp_path_factory: pytest.TempPathFactory, _stack: Stack) -> AsyncIterator[BotFactory]:
    """`ivrbot serve` assistant processes on the package's speech stack."""
    factory = BotFactory(tmp_path_factory, _stack)
    try:
        yield factory
    finally:
        await factory.stop()
