"""LlamaLLMService against a real llama-server (SmolLM2-135M)."""

from __future__ import annotations

import json

import pytest
from harness import Harness
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from sidecar_procs import SidecarProcess

from ivrbot.services.llama_llm import LlamaLLMService

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
