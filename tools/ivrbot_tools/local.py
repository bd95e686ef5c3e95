"""The whole system on one machine: the speech stack plus `ivrbot serve` as its own process.

Used by `ivrbot demo`, `ivrbot bench` and the end-to-end tests, so all three exercise the same
real processes a pod runs, talking over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ivrbot_sidecars.process import ManagedProcess, SidecarError
from ivrbot_tools.stack import Stack, StackConfig


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP right now (the bot's SIP port is UDP, HTTP is TCP)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as s2:
            try:
                s2.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def free_port_block(size: int) -> int:
    """The first port of `size` consecutive free UDP ports (an RTP range)."""
    for _ in range(200):
        start = free_port(socket.SOCK_DGRAM) & ~1
        socks: list[socket.socket] = []
        try:
            for p in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of UDP ports")


@dataclass
class LocalBotConfig:
    log_path: Path
    echo: bool = False
    max_calls: int = 8
    rtp_ports: int = 40
    env: dict[str, str] = field(default_factory=dict)


class LocalBot:
    """Speech stack + bot process on loopback, on free ports; `stop()` ends all of them."""

    def __init__(self, config: LocalBotConfig, stack: StackConfig | None = None) -> None:
        self.config = config
        self.stack_config = stack or StackConfig(vosk_port=free_port(), piper_port=free_port(), llama_port=free_port())
        self.stack: Stack | None = None if config.echo else Stack(self.stack_config)
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port()
        rtp = free_port_block(config.rtp_ports)
        s = self.stack_config
        env = {
            "IVRBOT_SIP_HOST": "127.0.0.1",
            "IVRBOT_SIP_PORT": str(self.sip_port),
            "IVRBOT_ADVERTISED_ADDRESS": "127.0.0.1",
            "IVRBOT_HTTP_HOST": "127.0.0.1",
            "IVRBOT_HTTP_PORT": str(self.http_port),
            "IVRBOT_RTP_PORT_MIN": str(rtp),
            "IVRBOT_RTP_PORT_MAX": str(rtp + config.rtp_ports - 1),
            "IVRBOT_MAX_CALLS": str(config.max_calls),
            "IVRBOT_VOSK_URL": s.vosk_url,
            "IVRBOT_PIPER_URL": s.piper_url,
            "IVRBOT_LLAMA_URL": f"{s.llama_url}/v1",
            "IVRBOT_LOG_JSON": "1",
            "IVRBOT_ECHO": "1" if config.echo else "0",
            **config.env,
        }
        self._log_file: Any = None
        self.env = env
        self.bot: ManagedProcess | None = None

    @property
    def sip_target(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    async def _bot_ready(self) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=2.0)
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.get(f"http://127.0.0.1:{self.http_port}/readyz") as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def start(self) -> None:
        if self.stack is not None:
            await self.stack.start()
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.config.log_path.open("wb")
        self.bot = ManagedProcess(
            "ivrbot-serve",
            [sys.executable, "-m", "ivrbot", "serve"],
            self._bot_ready,
            env=self.env,
            start_timeout=120,
            output=self._log_file,
        )
        try:
            await self.bot.start()
        except SidecarError as exc:
            await self.stop()
            tail = self.config.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise SidecarError(f"{exc} {' | '.join(tail)}".strip()) from exc

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.stop()
        if self.stack is not None:
            await self.stack.stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def __aenter__(self) -> LocalBot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The bot's JSON log lines so far (optionally of one call)."""
        return read_events(self.config.log_path, call_id)


def read_events(path: Path, call_id: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            if isinstance(ev, dict) and (call_id is None or ev.get("call_id") == call_id):
                out.append(ev)
    return out


async def wait_for_event(bot: LocalBot, call_id: str, event: str, timeout: float) -> dict[str, Any] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for ev in bot.events(call_id):
            if ev.get("event") == event:
                return ev
        await asyncio.sleep(0.1)
    return None
