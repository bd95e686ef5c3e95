"""The real upstream llama-server with the bundled SmolLM2 GGUF."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivrbot_sidecars import models
from ivrbot_sidecars.llama import LlamaServer, LlamaServerConfig, chat_once, shared_box_threads
from ivrbot_sidecars.process import SidecarError
from ivrbot_tools.stack import StackConfig

pytestmark = pytest.mark.slow

PROMPT = "You answer phone calls for a bakery. Reply in one short sentence."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def llama() -> AsyncIterator[LlamaServer]:
    server = LlamaServer(LlamaServerConfig(model=models.llama_model_path(), port=free_port(), parallel=2))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_streamed_completion_returns_tokens(llama: LlamaServer) -> None:
    await llama.warm_up(PROMPT)
    text, ttft = await chat_once(llama.base_url, PROMPT, "Do you sell bread?", max_tokens=24)
    assert text.strip(), "llama-server streamed no tokens"
    assert ttft >= 0


async def test_restarts_cleanly(llama: LlamaServer) -> None:
    port = llama.config.port
    await llama.stop()
    assert not llama.process.running
    again = LlamaServer(LlamaServerConfig(model=models.llama_model_path(), port=port, parallel=2))
    await again.start()  # the port was released by the first server
    try:
        text, _ = await chat_once(again.base_url, PROMPT, "Hello?", max_tokens=8)
        assert text.strip()
    finally:
        await again.stop()


async def test_port_taken_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = LlamaServer(LlamaServerConfig(model=models.llama_model_path(), port=port))
        with pytest.raises(SidecarError, match=rf"llama-server: port 127.0.0.1:{port} is already in use"):
            await server.start()


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match="llama-server: model not found"):
        LlamaServer(LlamaServerConfig(model=tmp_path / "nope.gguf"))


def test_threads_are_passed_unless_the_extra_arguments_name_them() -> None:
    def argv(threads: int | None, extra: list[str]) -> list[str]:
        return LlamaServerConfig(model=Path("m.gguf"), threads=threads, extra_args=extra).argv(Path("llama-server"))

    assert argv(1, [])[-2:] == ["--threads", "1"]
    assert "--threads" not in argv(None, [])  # llama.cpp's own default
    for extra in (["-t", "3"], ["--threads", "3"], ["--threads=3"]):
        got = argv(1, extra)
        assert got[-len(extra):] == extra and "1" not in got[-len(extra) - 2:-len(extra)], got


def test_the_stack_gives_llama_half_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, threads in ((1, 1), (2, 1), (3, 1), (4, 2), (16, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert shared_box_threads() == threads
        assert StackConfig().llama_threads == threads
