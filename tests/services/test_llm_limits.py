"""The LLM client's time limits, without a server: how the client is built and how the stream guard cuts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from openai import Timeout

from ivrbot.assistant_settings import AssistantSettings
from ivrbot.config import ConfigError, load_config
from ivrbot.services.llama_llm import LlamaLLMService, LLMStalled, _StallGuardedStream


def make(**kw: Any) -> LlamaLLMService:
    return LlamaLLMService(base_url="http://127.0.0.1:9/v1", system_prompt="S", **kw)


def test_client_has_bounded_timeouts_and_no_retries() -> None:
    llm = make(first_token_timeout=3.0, stall_timeout=1.5, connect_timeout=0.5)
    assert llm._client.max_retries == 0
    timeout = llm._client.timeout
    assert isinstance(timeout, Timeout)
    # the HTTP timeout is only a backstop behind the stream guard, never the 600 s default
    assert timeout.read == pytest.approx(4.5) and timeout.connect == pytest.approx(0.5)
    assert llm.first_token_timeout == 3.0 and llm.stall_timeout == 1.5


def test_defaults_come_from_the_settings() -> None:
    s = AssistantSettings()
    llm = make(first_token_timeout=s.llm_first_token_timeout_secs, stall_timeout=s.llm_stall_timeout_secs)
    assert llm._client.max_retries == 0
    assert 0 < s.llm_stall_timeout_secs <= s.llm_first_token_timeout_secs <= 10


@pytest.mark.parametrize("kw", [{"first_token_timeout": 0}, {"stall_timeout": -1.0}, {"connect_timeout": 0.0}])
def test_non_positive_limits_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        make(**kw)


@pytest.mark.parametrize("key", ["llm_first_token_timeout_secs", "llm_stall_timeout_secs"])
def test_config_refuses_non_positive_limits_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env={f"IVRBOT_{key.upper()}": "0"})
    assert getattr(load_config(env={f"IVRBOT_{key.upper()}": "7.5"}).assistant_settings(), key) == 7.5


def chunk(text: str | None) -> Any:
    return SimpleNamespace(choices=[SimpleNamespace(delta=SimpleNamespace(content=text))])


class FakeStream:
    """Yields chunks with the given pauses before each; records that it was closed."""

    def __init__(self, plan: list[tuple[float, Any]]) -> None:
        self.plan = plan
        self.closed = False

    async def _gen(self) -> AsyncIterator[Any]:
        for pause, item in self.plan:
            await asyncio.sleep(pause)
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()

    async def close(self) -> None:
        self.closed = True


async def drain(llm: LlamaLLMService, stream: FakeStream, first_within: float) -> list[Any]:
    guarded = _StallGuardedStream(stream, llm, asyncio.get_running_loop().time() + first_within)
    got: list[Any] = []
    try:
        async for c in guarded:
            got.append(c)
    finally:
        await guarded.close()
    return got


async def test_a_gap_after_tokens_is_a_stall() -> None:
    llm = make(stall_timeout=0.2)
    stream = FakeStream([(0, chunk("a")), (0, chunk("b")), (30, chunk("never"))])
    with pytest.raises(LLMStalled, match="after 2 tokens"):
        await drain(llm, stream, first_within=5)
    assert stream.closed and llm.stalls == 1 and llm.reply_tokens == 2


async def test_no_first_token_is_a_stall_even_when_role_chunks_arrive() -> None:
    llm = make(stall_timeout=0.1)
    # a role-only chunk is not a token: the first-token limit still applies, not the stall limit
    stream = FakeStream([(0, chunk(None)), (0.3, chunk(None)), (30, chunk("late"))])
    with pytest.raises(LLMStalled, match="no first token"):
        await drain(llm, stream, first_within=0.5)
    assert llm.stalls == 1


async def test_a_steady_stream_passes_untouched() -> None:
    llm = make(stall_timeout=0.5)
    plan = [(0.05, chunk(t)) for t in "hello"] + [(0.0, SimpleNamespace(choices=[]))]
    got = await drain(llm, FakeStream(plan), first_within=1)
    assert len(got) == 6 and llm.stalls == 0 and llm.reply_tokens == 5
