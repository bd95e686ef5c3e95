"""The warm-up names every slot llama-server reports, and falls back to one request when it reports none.

A stand-in HTTP server records what the warm-up sends; the real server's slots are checked in
test_llama_llm.py (two callers at once after the warm-up both find the prefix cached).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from ivrbot.services.llama_llm import LlamaLLMService


class FakeServer:
    def __init__(self, props: web.Response) -> None:
        self.props = props
        self.bodies: list[dict[str, Any]] = []

    async def get_props(self, _request: web.Request) -> web.Response:
        return self.props

    async def chat(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hi"}}],
        })


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(props: web.Response) -> tuple[FakeServer, str]:
        fake = FakeServer(props)
        app = web.Application()
        app.router.add_get("/props", fake.get_props)
        app.router.add_post("/v1/chat/completions", fake.chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return fake, f"http://127.0.0.1:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


async def warm(url: str) -> None:
    llm = LlamaLLMService(base_url=url, system_prompt="You answer the phone.")
    try:
        await llm.warm_up(greeting="Hello, how can I help?")
    finally:
        await llm._client.close()


async def test_every_reported_slot_gets_its_own_request(serve: Any) -> None:
    fake, url = await serve(web.json_response({"total_slots": 3}))
    await warm(url)
    assert sorted(b["id_slot"] for b in fake.bodies) == [0, 1, 2]
    assert all(b["cache_prompt"] is True and b["max_tokens"] == 1 for b in fake.bodies)
    assert len({str(b["messages"]) for b in fake.bodies}) == 1, "every slot must get the same prefix"
    assert [m["role"] for m in fake.bodies[0]["messages"]] == ["system", "assistant", "user"]


@pytest.mark.parametrize("props", [
    web.Response(status=404, text="not found"),
    web.json_response({"total_slots": "three"}),
    web.json_response({"total_slots": 0}),
    web.Response(text="not json"),
])
async def test_a_server_that_reports_no_slots_gets_one_plain_request(serve: Any, props: web.Response) -> None:
    fake, url = await serve(props)
    await warm(url)
    assert len(fake.bodies) == 1
    assert "id_slot" not in fake.bodies[0]
