"""`ivrbot stack`: the three sidecars of a bot pod as real servers on loopback.

Each runs as its own process (as in a pod), is waited on until ready, and is watched: if one dies,
the stack says which and stops the others instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ivrbot.assistant_settings import DEFAULT_SYSTEM_PROMPT, AssistantSettings
from ivrbot.logs import get_logger
from ivrbot_sidecars.llama import LlamaServer, LlamaServerConfig, shared_box_threads
from ivrbot_sidecars.process import ManagedProcess, tcp_ready

log = get_logger(__name__)


def _default_port(url: str) -> int:
    """The port of one of the bot's default sidecar URLs: the stack serves where the bot looks by default."""
    port = urlsplit(url).port
    assert port is not None, url
    return port


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    vosk_port: int = _default_port(AssistantSettings.vosk_url)
    piper_port: int = _default_port(AssistantSettings.piper_url)
    llama_port: int = _default_port(AssistantSettings.llama_url)
    vosk_model: Path | None = None
    piper_voice: Path | None = None
    llama_model: Path | None = None
    llama_parallel: int = 4
    #: llama-server --threads (half the CPUs: it shares the box with the other two); a --threads in llama_args wins
    llama_threads: int | None = field(default_factory=shared_box_threads)
    #: extra llama-server arguments (e.g. thread counts); LLAMA_SERVER_ARGS adds to them
    llama_args: list[str] = field(default_factory=lambda: os.environ.get("LLAMA_SERVER_ARGS", "").split())
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def vosk_url(self) -> str:
        return f"ws://{self.host}:{self.vosk_port}"

    @property
    def piper_url(self) -> str:
        return f"ws://{self.host}:{self.piper_port}"

    @property
    def llama_url(self) -> str:
        return f"http://{self.host}:{self.llama_port}"


class Stack:
    """Vosk, Piper and llama-server, started in parallel, stopped together."""

    def __init__(self, config: StackConfig) -> None:
        from ivrbot_sidecars import models

        self.config = config
        c = config
        vosk_model = c.vosk_model or models.vosk_model_path()
        piper_voice = c.piper_voice or models.piper_voice_path()
        llama_model = c.llama_model or models.llama_model_path()
        py = sys.executable
        self.vosk = ManagedProcess(
            "vosk-server",
            [
                py,
                "-m",
                "ivrbot",
                "vosk-server",
                "--host",
                c.host,
                "--port",
                str(c.vosk_port),
                "--model",
                str(vosk_model),
            ],
            lambda: tcp_ready(c.host, c.vosk_port),
            env=c.extra_env,
            host=c.host,
            port=c.vosk_port,
        )
        self.piper = ManagedProcess(
            "piper-server",
            [
                py,
                "-m",
                "ivrbot",
                "piper-server",
                "--host",
                c.host,
                "--port",
                str(c.piper_port),
                "--voice",
                str(piper_voice),
            ],
            lambda: tcp_ready(c.host, c.piper_port),
            env=c.extra_env,
            host=c.host,
            port=c.piper_port,
        )
        self.llama = LlamaServer(
            LlamaServerConfig(
                model=llama_model,
                host=c.host,
                port=c.llama_port,
                parallel=c.llama_parallel,
                threads=c.llama_threads,
                extra_args=list(c.llama_args),
            )
        )

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self.vosk, self.piper, self.llama.process]

    async def start(self) -> None:
        results = await asyncio.gather(
            self.vosk.start(), self.piper.start(), self.llama.start(), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]
        await self.llama.warm_up(self.config.system_prompt)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes), return_exceptions=True)

    async def wait_for_failure(self) -> str:
        """Return the name of the first sidecar that exits (its death is an error while serving)."""
        waits = {asyncio.create_task(p.wait()): p for p in self.processes}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            proc = waits[next(iter(done))]
            return f"{proc.name} exited with code {proc.returncode}: {proc.last_output()}"
        finally:
            for t in waits:
                t.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
