"""The upstream llama-server as a supervised sidecar, with readiness from /health and a warm-up.

The warm-up sends the configured system prompt once so its KV prefix is cached before the first
caller: measured here, first token is ~500 ms on a new prompt and 50-80 ms on a cached prefix.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ivrbot_sidecars.models import llama_server_bin
from ivrbot_sidecars.process import ManagedProcess, SidecarError

THREAD_FLAGS = ("-t", "--threads")


def names_threads(args: list[str]) -> bool:
    """Whether llama-server arguments set the thread count themselves."""
    return any(a in THREAD_FLAGS or a.startswith("--threads=") for a in args)


def shared_box_threads() -> int:
    """Threads for a llama-server sharing its machine with Vosk, Piper and the bot: half the CPUs, at least 1.

    llama.cpp's default is one thread per CPU, and its threads meet at a barrier per token: on a
    2-core box where three calls' Vosk, Piper and bot also run, a preempted thread stalls the
    others. Measured here with the Q8_0 model (docs/benchmarks.md): one thread instead of two cut
    llama-server's CPU over a three-call level from 30-40 s to 16-17 s and the three-call p95 from
    1.4-3.2 s to 1.3-1.5 s, one call unchanged (p50 626-700 against 620-672 ms).
    """
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return max(1, cpus // 2)


@dataclass
class LlamaServerConfig:
    model: Path
    host: str = "127.0.0.1"
    port: int = 8080  #: where `ivrbot serve` looks for it by default (pinned to AssistantSettings.llama_url)
    ctx_size: int = 4096
    parallel: int = 4
    #: --threads, unless ``extra_args`` set them; None leaves llama.cpp's default (one per CPU)
    threads: int | None = None
    extra_args: list[str] = field(default_factory=list)

    def argv(self, binary: Path) -> list[str]:
        args = [
            str(binary),
            "--host", self.host,
            "--port", str(self.port),
            "-m", str(self.model),
            "--ctx-size", str(self.ctx_size),
            "--parallel", str(self.parallel),
            "--no-webui",
            "--log-disable",
        ]
        if self.passed_threads is not None:
            args += ["--threads", str(self.passed_threads)]
        return args + self.extra_args

    @property
    def passed_threads(self) -> int | None:
        """The --threads this config adds: None when ``extra_args`` set them, or none is given."""
        return self.threads if self.threads and not names_threads(self.extra_args) else None


class LlamaServer:
    """llama-server child process; `start()` returns once /health answers 200."""

    def __init__(self, config: LlamaServerConfig) -> None:
        if not config.model.is_file():
            raise SidecarError(f"llama-server: model not found at {config.model}")
        self.config = config
        self.base_url = f"http://{config.host}:{config.port}"
        self.process = ManagedProcess(
            "llama-server",
            config.argv(llama_server_bin()),
            self._healthy,
            host=config.host,
            port=config.port,
        )

    async def _healthy(self) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(f"{self.base_url}/health") as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def start(self) -> None:
        await self.process.start()

    async def stop(self) -> None:
        await self.process.stop()

    async def warm_up(self, system_prompt: str) -> float:
        """Send the system prompt once so its prefix is cached; returns the seconds it took."""
        t0 = time.perf_counter()
        await chat_once(self.base_url, system_prompt, "Hello.", max_tokens=1)
        return time.perf_counter() - t0


async def chat_once(base_url: str, system_prompt: str, user: str, *, max_tokens: int = 48) -> tuple[str, float]:
    """A streamed chat completion: returns the text and the seconds to the first token."""
    body = {
        "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
        "stream": True,
        "cache_prompt": True,
        "temperature": 0.3,
    }
    t0 = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.post(f"{base_url}/v1/chat/completions", json=body) as r,
    ):
        if r.status != 200:
            raise SidecarError(f"llama-server: HTTP {r.status}: {(await r.text())[:200]}")
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
            if delta:
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(delta)
    return "".join(parts), (first if first is not None else time.perf_counter() - t0)
