"""llama-server through Pipecat's OpenAI service, tuned so its prompt cache holds between turns.

What keeps the cache: every request is the call's ``LLMContext`` messages in order (system prompt
first, byte-identical every turn, no timestamps or per-turn instructions), followed by the
history exactly as it was sent before, so llama-server reuses the KV prefix (``cache_prompt``).
Measured here: ~500 ms to first token on a new prompt, 50-80 ms on a cached prefix.
``max_tokens`` is always sent: a phone reply longer than a few sentences is a bug, and an
unbounded generation would hold a llama-server slot after the caller has moved on.
Interruption cancels the streaming task, which closes the HTTP stream; llama-server stops
generating for a closed connection.
"""

from __future__ import annotations

import time
from typing import Any

from pipecat.services.openai.llm import OpenAILLMService

from ivrbot.logs import get_logger

log = get_logger(__name__)


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
        **kwargs: Any,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
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
        self._max_tokens = max_tokens
        self._log = log.bind(call_id=call_id, service="llama")
        self._system_prompt = system_prompt
        self._model = model
        #: the last request's parameters, as sent (for diagnostics and prefix-stability tests)
        self.last_request: dict[str, Any] | None = None
        #: prompt tokens llama-server reused from its cache on the last completed request
        self.last_cached_tokens: int | None = None

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def build_chat_completion_params(self, params_from_context: Any) -> dict[str, Any]:
        params: dict[str, Any] = super().build_chat_completion_params(params_from_context)
        # llama-server does not know OpenAI's newer name; send the one it honours.
        params["max_tokens"] = self._max_tokens
        params.pop("max_completion_tokens", None)
        self.last_request = params
        return params

    def _token_usage(self, usage: Any) -> Any:
        details = getattr(usage, "prompt_tokens_details", None)
        self.last_cached_tokens = getattr(details, "cached_tokens", None)
        return super()._token_usage(usage)

    async def warm_up(self, greeting: str = "") -> float:
        """Evaluate the call's fixed prefix once so the first caller hits the cache; returns seconds.

        The prefix is the system prompt and, when the call opens with one, the greeting (it sits in
        the context as the assistant's first message), exactly as the first turn will send them.
        """
        t0 = time.perf_counter()
        messages: list[dict[str, str]] = [{"role": "system", "content": self._system_prompt}]
        if greeting:
            messages.append({"role": "assistant", "content": greeting})
        messages.append({"role": "user", "content": "Hello."})
        await self._client.chat.completions.create(
            model=self._model,
            messages=messages,
            max_tokens=1,
            stream=False,
            extra_body={"cache_prompt": True},
        )
        elapsed = time.perf_counter() - t0
        self._log.info("llm warmed up", seconds=round(elapsed, 3))
        return elapsed
