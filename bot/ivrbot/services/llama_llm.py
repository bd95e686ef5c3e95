"""llama-server through Pipecat's OpenAI service, tuned so its prompt cache holds between turns.

What keeps the cache: every request is the call's ``LLMContext`` messages in order (system prompt
first, byte-identical every turn, no timestamps or per-turn instructions), followed by the
history exactly as it was sent before, so llama-server reuses the KV prefix (``cache_prompt``).
Measured here: ~500 ms to first token on a new prompt, 50-80 ms on a cached prefix.
``max_tokens`` is always sent: a phone reply longer than a few sentences is a bug, and an
unbounded generation would hold a llama-server slot after the caller has moved on.
Interruption cancels the streaming task, which closes the HTTP stream; llama-server stops
generating for a closed connection.

A paused or wedged llama-server must not leave the caller in silence: the OpenAI client's own
defaults (600 s, two retries) would. Each reply is bounded twice: the first token must arrive within
``first_token_timeout`` of the request, and each later token within ``stall_timeout`` of the one
before. A stall closes the stream (llama-server frees the slot when it next writes) and raises
``LLMStalled``; Pipecat turns it into an error frame, which the assistant answers with the apology.
The client never retries on its own: a retry would multiply the wait the caller already sat through,
and the caller's next turn is the retry.

``prefill()`` sends, while the caller still speaks, the request the turn's reply will begin with
(built by the same adapter path, so the tokens are the same) with one token to generate: the
transcript so far is in the slot's KV cache before the real request comes (``llm_prefill.py``).
It posts that body with plain aiohttp rather than the OpenAI client: the client's request
transforms and response models cost ~2.5 ms of CPU per request against ~0.4 ms (measured against a
local server), and a talking caller sends several prefills a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from openai import NotGiven, Omit, Timeout
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.types import assert_given

from ivrbot.logs import get_logger
from ivrbot.services.preemptive import PreemptiveLLMGate

log = get_logger(__name__)


class LLMStalled(TimeoutError):
    """llama-server sent no token within the allowed time; the request has been abandoned.

    A ``TimeoutError``, so Pipecat files it as a connectivity failure: the service stays usable.
    """


@dataclass(frozen=True)
class PromptUsage:
    """What llama-server reported for one request's prompt."""

    prompt_tokens: int
    #: of those, taken from the slot's KV cache instead of evaluated
    cached_tokens: int | None


class _StallGuardedStream:
    """The chat-completion chunk stream with a deadline for the first token and for every gap after it."""

    def __init__(self, stream: Any, service: LlamaLLMService, deadline: float) -> None:
        self._stream = stream
        self._service = service
        self._deadline = deadline  # loop time by which the first token must be in

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        it = self._stream.__aiter__()
        tokens = 0
        try:
            while True:
                wait = self._service.stall_timeout if tokens else max(0.0, self._deadline - loop.time())
                limit = asyncio.timeout(wait)
                try:
                    async with limit:
                        chunk = await it.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if not limit.expired():
                        raise
                    raise self._service.stalled(tokens) from None
                choices = getattr(chunk, "choices", None)
                delta = choices[0].delta if choices else None
                # a role-only chunk is not a token; text and tool-call fragments are
                if getattr(delta, "content", None) or getattr(delta, "tool_calls", None):
                    tokens += 1
                    self._service.reply_tokens = tokens
                yield chunk
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    async def close(self) -> None:
        await self._stream.close()


class LlamaLLMService(OpenAILLMService):
    """OpenAI-compatible streaming chat against llama-server, with a bounded reply and a warm-up."""

    def __init__(
        self,
        *,
        base_url: str,
        system_prompt: str,
        model: str = "local",
        max_tokens: int = 120,
        temperature: float = 0.3,
        call_id: str = "",
        first_token_timeout: float = 10.0,
        stall_timeout: float = 4.0,
        connect_timeout: float = 2.0,
        preemptive: bool = False,
        **kwargs: Any,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        for name, value in (("first_token_timeout", first_token_timeout), ("stall_timeout", stall_timeout),
                            ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        settings = OpenAILLMService.Settings(
            model=model,
            # Sent as the first message of every request, byte-identical (not stored in the context).
            system_instruction=system_prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            # llama-server extension: keep the evaluated prompt in the slot for the next turn.
            extra={"extra_body": {"cache_prompt": True}},
        )
        super().__init__(base_url=base_url, api_key="none", settings=settings, **kwargs)
        self.first_token_timeout = first_token_timeout
        self.stall_timeout = stall_timeout
        # The stream guard below fires first; the HTTP timeout is the backstop for any other request
        # (warm-up, run_inference). No retries: the guard's bound is the caller's whole wait.
        self._client = self._client.with_options(
            timeout=Timeout(first_token_timeout + stall_timeout, connect=connect_timeout),
            max_retries=0,
        )
        if preemptive:
            # A speculative reply goes on to the TTS at once; SpeculativeReplyGate holds it after the TTS.
            self._speculation_gate = PreemptiveLLMGate(name=f"{self}::PreemptiveLLMGate")
        self._max_tokens = max_tokens
        self._connect_timeout = connect_timeout
        #: the prefill's own HTTP session, opened by the first prefill and closed in cleanup()
        self._prefill_http: aiohttp.ClientSession | None = None
        self._log = log.bind(call_id=call_id, service="llama")
        self._system_prompt = system_prompt
        self._model = model
        #: the last request's parameters, as sent (for diagnostics and prefix-stability tests)
        self.last_request: dict[str, Any] | None = None
        #: prompt tokens llama-server reused from its cache on the last completed request
        self.last_cached_tokens: int | None = None
        #: requests abandoned because llama-server stopped sending tokens
        self.stalls = 0
        #: text chunks (one token each from llama-server) received for the current or last reply
        self.reply_tokens = 0

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def build_chat_completion_params(self, params_from_context: Any) -> dict[str, Any]:
        params = self._request_params(params_from_context)
        self.last_request = params
        return params

    def _request_params(self, params_from_context: Any) -> dict[str, Any]:
        params: dict[str, Any] = super().build_chat_completion_params(params_from_context)
        # llama-server does not know OpenAI's newer name; send the one it honours.
        params["max_tokens"] = self._max_tokens
        params.pop("max_completion_tokens", None)
        return params

    async def prefill_request(self, context: LLMContext) -> dict[str, Any]:
        """The parameters of a reply to ``context``, as ``get_chat_completions`` builds them, made non-streamed
        with one token to generate (llama-server generates one even for ``max_tokens`` 0)."""
        settings: Any = self._settings
        from_context = await self.get_llm_adapter().get_llm_invocation_params(
            context,
            system_instruction=assert_given(settings.system_instruction),
            convert_developer_to_user=not self.supports_developer_role,
        )
        params = self._request_params(from_context)
        params.update(stream=False, max_tokens=1)
        params.pop("stream_options", None)
        return params

    async def prefill(self, context: LLMContext) -> PromptUsage:
        """Have llama-server evaluate ``context`` into a slot's KV cache; returns its prompt usage.

        Cancelling it closes the connection, but llama-server only notices between decode steps: a
        prompt being evaluated keeps its slot until the evaluation is done (measured, docs/pipeline.md).
        """
        body = await self.prefill_body(context)
        if self._prefill_http is None:
            self._prefill_http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=self.first_token_timeout + self.stall_timeout, connect=self._connect_timeout))
        url = str(self._client.base_url).rstrip("/") + "/chat/completions"
        async with self._prefill_http.post(url, json=body) as response:
            response.raise_for_status()
            reply: Any = await response.json()
        usage = reply.get("usage") if isinstance(reply, dict) else None
        if not isinstance(usage, dict):
            raise ValueError(f"llama-server answered a prefill without usage: {str(reply)[:200]}")
        details = usage.get("prompt_tokens_details")
        return PromptUsage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=details.get("cached_tokens") if isinstance(details, dict) else None,
        )

    async def prefill_body(self, context: LLMContext) -> dict[str, Any]:
        """``prefill_request`` as the JSON body the OpenAI client would post for it."""
        params = await self.prefill_request(context)
        client_only = ("extra_body", "extra_headers", "extra_query", "timeout")
        body = {k: v for k, v in params.items() if not isinstance(v, NotGiven | Omit) and k not in client_only}
        body.update(params.get("extra_body") or {})
        return body

    async def cleanup(self) -> None:
        try:
            await super().cleanup()  # type: ignore[no-untyped-call]
        finally:
            if self._prefill_http is not None:
                await self._prefill_http.close()
                self._prefill_http = None

    async def get_chat_completions(self, context: LLMContext) -> Any:
        """The streaming request, bounded until its first token and between tokens (see module doc)."""
        deadline = asyncio.get_running_loop().time() + self.first_token_timeout
        self.reply_tokens = 0
        limit = asyncio.timeout_at(deadline)
        try:
            async with limit:
                stream = await super().get_chat_completions(context)
        except TimeoutError:
            if not limit.expired():
                raise
            raise self.stalled(0) from None
        return _StallGuardedStream(stream, self, deadline)

    def stalled(self, tokens: int) -> LLMStalled:
        """Count and log a stall (with the call id) and build the error that ends the turn."""
        self.stalls += 1
        limit = self.stall_timeout if tokens else self.first_token_timeout
        what = f"no token for {limit:g} s after {tokens} tokens" if tokens else f"no first token in {limit:g} s"
        self._log.warning("llm stalled; request cancelled", tokens=tokens, limit_secs=limit)
        return LLMStalled(f"llama-server stalled: {what}")

    def _token_usage(self, usage: Any) -> Any:
        details = getattr(usage, "prompt_tokens_details", None)
        self.last_cached_tokens = getattr(details, "cached_tokens", None)
        # llama-server reports usage once, in the stream's last chunk: one line per reply
        self._log.info("llm prompt", prompt_tokens=getattr(usage, "prompt_tokens", None),
                       cached_tokens=self.last_cached_tokens)
        return super()._token_usage(usage)

    async def warm_up(self, greeting: str = "", warm_up_timeout: float = 30.0) -> float:
        """Evaluate the call's fixed prefix into every llama-server slot so no caller waits for it; returns seconds.

        The prefix is the system prompt and, when the call opens with one, the greeting (it sits in
        the context as the assistant's first message), exactly as the first turn will send them.
        Every slot, because calls at once get different slots, and a slot that never held the prefix
        evaluates all of it for its first caller (measured: the second of three calls at once had 0
        of 89 prompt tokens cached when one slot was warm). Each request names its slot (``id_slot``):
        sent together without it, a quick one can finish before the next arrives, which then reuses
        its slot. A server that does not say how many slots it has (no llama-server ``/props``) gets
        one request.
        """
        t0 = time.perf_counter()
        messages: list[dict[str, str]] = [{"role": "system", "content": self._system_prompt}]
        if greeting:
            messages.append({"role": "assistant", "content": greeting})
        messages.append({"role": "user", "content": "Hello."})
        slots = await self._slot_count()

        async def warm(slot: int | None) -> None:
            await self._client.chat.completions.create(
                model=self._model,
                messages=messages,
                max_tokens=1,
                stream=False,
                extra_body={"cache_prompt": True, **({"id_slot": slot} if slot is not None else {})},
                # evaluating a new prefix on a loaded machine can take seconds; no caller is waiting here
                timeout=warm_up_timeout,
            )

        if slots:
            await asyncio.gather(*(warm(i) for i in range(slots)))
        else:
            await warm(None)
        elapsed = time.perf_counter() - t0
        self._log.info("llm warmed up", seconds=round(elapsed, 3), slots=slots or 1)
        return elapsed

    async def _slot_count(self) -> int:
        """llama-server's slot count from ``/props`` (beside the ``/v1`` API); 0 when it does not say."""
        root = str(self._client.base_url).rstrip("/").removesuffix("/v1")
        try:
            timeout = aiohttp.ClientTimeout(total=5.0, connect=self._connect_timeout)
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{root}/props") as r:
                props: Any = await r.json(content_type=None) if r.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0
        slots = props.get("total_slots") if isinstance(props, dict) else None
        return slots if isinstance(slots, int) and 0 < slots <= 1024 else 0
