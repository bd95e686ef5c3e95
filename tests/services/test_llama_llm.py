"""LlamaLLMService against a real llama-server (SmolLM2-135M)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import Harness
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from sidecar_procs import SidecarProcess, llama_process

from ivrbot.services.llama_llm import LlamaLLMService
from ivrbot.services.preemptive import SPECULATIVE

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful phone assistant. Answer in one short sentence."


def service(llama: SidecarProcess, system: str = SYSTEM, **kw: object) -> LlamaLLMService:
    return LlamaLLMService(base_url=f"http://127.0.0.1:{llama.port}/v1", system_prompt=system, **kw)  # type: ignore[arg-type]


def reply_text(h: Harness, start: int = 0) -> str:
    return "".join(f.text for f in h.down.of(LLMTextFrame)[start:])


async def test_streams_tokens_and_keeps_the_prefix_byte_stable(llama: SidecarProcess) -> None:
    llm = service(llama, max_tokens=40)
    await llm.warm_up()
    ctx = LLMContext()
    async with Harness(llm) as h:
        ctx.add_message({"role": "user", "content": "What is the capital of France?"})
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: len(h.down.of(LLMFullResponseEndFrame)) == 1)
        first_tokens = len(h.down.of(LLMTextFrame))
        assert first_tokens > 1, "the reply should stream in several chunks"
        first = llm.last_request
        assert first is not None and first["max_tokens"] == 40 and first["stream"] is True
        assert first["extra_body"] == {"cache_prompt": True}
        ctx.add_message({"role": "assistant", "content": reply_text(h)})
        ctx.add_message({"role": "user", "content": "And of Spain?"})
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: len(h.down.of(LLMFullResponseEndFrame)) == 2)
        second = llm.last_request
        assert second is not None
    m1, m2 = first["messages"], second["messages"]
    # Turn 2 repeats turn 1's messages unchanged, so llama-server's cached prefix holds.
    assert json.dumps(m2[: len(m1)]) == json.dumps(m1)
    assert m1[0] == {"role": "system", "content": SYSTEM}
    # ... and llama-server says so: most of turn 2's prompt came from its cache.
    assert llm.last_cached_tokens is not None and llm.last_cached_tokens > 20
    assert reply_text(h, first_tokens).strip()


async def test_warm_up_fills_every_slot(sidecar_logs: Path) -> None:
    """After the warm-up, a caller finds the prefix cached whichever slot llama-server gives it."""
    llama = llama_process(sidecar_logs)  # its own server (--parallel 2): no earlier test warmed its slots
    await llama.astart()
    system, greeting = "You answer the phone for a bakery in Seoul. Keep every answer to one sentence.", "Hello!"
    try:
        llm = service(llama, system)
        await llm.warm_up(greeting=greeting)
        cached = []
        async with aiohttp.ClientSession() as http:
            for slot in (0, 1):  # each slot in turn, named, so neither can borrow the other's cache
                body = {"messages": [{"role": "system", "content": system}, {"role": "assistant", "content": greeting},
                                     {"role": "user", "content": "영업 시간이 어떻게 되나요"}],
                        "max_tokens": 1, "cache_prompt": True, "id_slot": slot}
                async with http.post(f"http://127.0.0.1:{llama.port}/v1/chat/completions", json=body) as r:
                    cached.append((await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"])
    finally:
        await llama.astop()
    # the system prompt, the greeting and the template around them (~40 tokens) came from the cache
    assert all(n >= 30 for n in cached), cached


async def test_max_tokens_bounds_the_reply(llama: SidecarProcess) -> None:
    llm = service(llama, max_tokens=5)
    ctx = LLMContext(messages=[{"role": "user", "content": "Tell me a long story about a dragon."}])
    async with Harness(llm) as h:
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: bool(h.down.of(LLMFullResponseEndFrame)))
        # llama-server streams one token per chunk: at most max_tokens text chunks.
        assert 0 < len(h.down.of(LLMTextFrame)) <= 5


async def test_interruption_stops_generation(llama: SidecarProcess) -> None:
    prompt = "Write a very long story about a dragon who learns to fly. Use at least 300 words."
    ctx = LLMContext(messages=[{"role": "user", "content": prompt}])
    story = "You are a helpful assistant."
    full = service(llama, story, max_tokens=300)
    async with Harness(full) as h:
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: bool(h.down.of(LLMFullResponseEndFrame)), timeout=120)
        uninterrupted = len(h.down.of(LLMTextFrame))
    assert uninterrupted > 60, "the prompt should produce a long reply for this test to mean anything"

    llm = service(llama, story, max_tokens=300)
    async with Harness(llm) as h:
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: len(h.down.of(LLMTextFrame)) >= 3)
        await h.send(InterruptionFrame())
        interrupted = await h.settle(lambda: len(h.down.of(LLMTextFrame)), quiet=1.0)
    assert interrupted < uninterrupted // 2


async def test_server_down_is_a_recoverable_error(llama: SidecarProcess) -> None:
    from pipecat.frames.frames import ErrorFrame
    from sidecar_procs import free_port

    llm = LlamaLLMService(base_url=f"http://127.0.0.1:{free_port()}/v1", system_prompt=SYSTEM, max_tokens=10)
    ctx = LLMContext(messages=[{"role": "user", "content": "Hi"}])
    async with Harness(llm) as h:
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: bool(h.up.of(ErrorFrame)))
        assert await h.wait_for(lambda: bool(h.down.of(LLMFullResponseEndFrame)))
        assert llm.is_usable


STORY = "Write a very long story about a dragon who learns to fly. Use at least 300 words."


async def test_paused_server_is_a_stall_error_and_the_next_turn_works(sidecar_logs: Path) -> None:
    """llama-server SIGSTOPped mid-reply and before a reply: each turn ends with an error, then recovers."""
    from pipecat.frames.frames import ErrorFrame

    llama = llama_process(sidecar_logs)  # its own server: pausing the shared one would stall other tests
    await llama.astart()
    assert llama.proc is not None
    pid = llama.proc.pid
    try:
        # limits well above a loaded machine's normal pace, so only the pauses below trip them
        llm = service(llama, "You are a helpful assistant.", max_tokens=300, first_token_timeout=8.0,
                      stall_timeout=2.0)

        def errors() -> list[str]:
            return [str(f.error) for f in h.up.of(ErrorFrame)]

        def ends() -> int:
            return len(h.down.of(LLMFullResponseEndFrame))

        async with Harness(llm) as h:
            await h.send(LLMContextFrame(LLMContext(messages=[{"role": "user", "content": STORY}])))
            assert await h.wait_for(lambda: len(h.down.of(LLMTextFrame)) >= 3)
            assert ends() == 0, "the reply must still be streaming when the server is paused"
            os.kill(pid, signal.SIGSTOP)
            try:
                assert await h.wait_for(lambda: bool(errors()) and ends() == 1, timeout=20)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert "stalled" in errors()[0] and "tokens" in errors()[0]
            assert llm.stalls == 1 and llm.is_usable

            # Paused before the request: the first-token limit ends the turn.
            os.kill(pid, signal.SIGSTOP)
            try:
                await h.send(LLMContextFrame(LLMContext(messages=[{"role": "user", "content": "Hi"}])))
                assert await h.wait_for(lambda: len(errors()) == 2 and ends() == 2, timeout=20)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert "no first token" in errors()[1]

            # Back: the next turn is answered.
            tokens = len(h.down.of(LLMTextFrame))
            ctx = LLMContext(messages=[{"role": "user", "content": "What is the capital of France?"}])
            await h.send(LLMContextFrame(ctx))
            assert await h.wait_for(lambda: ends() == 3)
            assert len(errors()) == 2
            assert reply_text(h, tokens).strip()
    finally:
        os.kill(pid, signal.SIGCONT)
        llama.stop()


def _slot_releases(llama: SidecarProcess) -> list[int]:
    """n_tokens (prompt + generated) of every slot release in llama-server's log, in order."""
    return [int(m) for m in re.findall(r"stop processing: n_tokens = (\d+)", llama.log_path.read_text())]


async def _slots_busy(llama: SidecarProcess) -> bool:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{llama.port}/slots") as r:
        return any(slot.get("is_processing") for slot in await r.json())


async def test_withdrawn_preemptive_reply_stops_the_llama_slot(llama: SidecarProcess) -> None:
    """A withdrawn speculative reply closes its stream, and llama-server stops decoding for it."""
    prompt = "Write a very long story about a dragon who learns to fly. Use at least 300 words."
    ctx = LLMContext(messages=[{"role": "user", "content": prompt}])
    story = "You are a helpful assistant."
    async with Harness(service(llama, story, max_tokens=300)) as h:
        await h.send(LLMContextFrame(ctx))
        assert await h.wait_for(lambda: bool(h.down.of(LLMFullResponseEndFrame)), timeout=120)
    assert await _wait(lambda: _slot_releases(llama) != [])
    full = _slot_releases(llama)[-1]

    llm = LlamaLLMService(base_url=f"http://127.0.0.1:{llama.port}/v1", system_prompt=story, max_tokens=300,
                          preemptive=True)
    async with Harness(llm) as h:
        before = len(_slot_releases(llama))
        await h.send(LLMContextFrame(ctx, speculation=True))
        assert await h.wait_for(lambda: len(h.down.of(LLMTextFrame)) >= 3)
        # the preemptive gate passes the speculative reply on (it is held after the TTS, not here)
        assert h.down.of(LLMFullResponseStartFrame)[0].metadata.get(SPECULATIVE) is True
        await h.send(EagerEndOfTurnCancelFrame())
        assert await _wait(lambda: len(_slot_releases(llama)) > before)
        assert not await _slots_busy(llama)
    stopped_at = _slot_releases(llama)[-1]
    # The slot was released long before the reply could have finished on its own.
    assert stopped_at < full - 100, (stopped_at, full)


async def _wait(pred: Any, timeout: float = 60.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)
    return True
