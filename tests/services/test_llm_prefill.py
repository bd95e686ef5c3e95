"""LLM prefill: the plan's rules (hypothesis), the processor in a real pipeline with a fake LLM,
and the cache it fills in a real llama-server (SmolLM2-135M)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from harness import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.processors.frame_processor import FrameDirection
from sidecar_procs import SidecarProcess

from ivrbot.pause_signal import UserPausedFrame, UserResumedFrame
from ivrbot.services.llama_llm import LlamaLLMService, PromptUsage
from ivrbot.services.llm_prefill import LLMPrefill, PrefillPlan

# Korean-like words, and the revisions Vosk makes to a partial (a syllable changed, a word dropped).
WORDS = ["안녕하세요", "네", "예약", "을", "하고", "싶어요", "내일", "오후", "세시", "에", "가능", "한가요"]

op = st.one_of(
    st.just(("vad_start", "")),
    st.just(("vad_stop", "")),
    st.builds(lambda w: ("partial", " ".join(w)), st.lists(st.sampled_from(WORDS), max_size=6)),
    st.builds(lambda w: ("final", " ".join(w)), st.lists(st.sampled_from(WORDS), max_size=4)),
    st.just(("turn_end", "")),
    st.just(("done_ok", "")),
    st.just(("done_failed", "")),
)


@given(ops=st.lists(op, max_size=60), min_growth=st.integers(1, 5))
@settings(max_examples=400, deadline=None)
def test_plan_sends_the_latest_transcript_one_at_a_time_and_only_while_the_caller_speaks(
    ops: list[tuple[str, str]], min_growth: int
) -> None:
    plan = PrefillPlan(min_growth=min_growth)
    speaking = False
    in_flight: str | None = None
    covered = ""
    for kind, text in ops:
        sent: str | None = None
        if kind == "vad_start":
            speaking = True
            sent = plan.vad_started()
        elif kind == "vad_stop":
            speaking = False
            assert plan.vad_stopped() is (in_flight is not None)
        elif kind == "partial":
            sent = plan.partial(text)
        elif kind == "final":
            sent = plan.final(text)
        elif kind == "turn_end":
            plan.turn_ended()
            covered = ""
        elif in_flight is not None:
            if kind == "done_ok":
                covered = in_flight
            in_flight = None
            sent = plan.done(kind == "done_ok")
        if sent is not None:
            assert speaking, "a prefill was sent between a VAD stop and the next VAD start"
            assert in_flight is None, "a second prefill was sent while one was in flight"
            assert sent == plan.transcript(), "a prefill must carry the latest transcript"
            shared = next(i for i in range(len(sent), -1, -1) if covered.startswith(sent[:i]))
            assert len(sent) - shared >= min_growth, "a prefill must bring min_growth new characters"
            in_flight = sent
        assert plan.in_flight == in_flight


def test_plan_waits_for_the_prefill_in_flight_and_then_sends_only_the_latest_partial() -> None:
    plan = PrefillPlan(min_growth=3)
    plan.vad_started()
    assert plan.partial("예약 을") == "예약 을"
    assert plan.partial("예약 을 하고") is None  # one in flight
    assert plan.partial("예약 을 하고 싶어요") is None
    assert plan.done(True) == "예약 을 하고 싶어요"
    assert plan.done(True) is None
    assert plan.partial("예약 을 하고 싶어요 네") is None  # two characters: below min_growth
    assert plan.final("예약 을 하고 싶어요 네요") == "예약 을 하고 싶어요 네요"
    assert plan.vad_stopped() is True
    assert plan.done(False) is None  # cancelled at the stop: nothing follows while the caller is silent
    # the caller goes on: what the cancelled prefill carried is not taken as cached
    assert plan.vad_started() == "예약 을 하고 싶어요 네요"
    assert plan.partial("내일") is None
    assert plan.done(True) == "예약 을 하고 싶어요 네요 내일"  # the turn's finals, then the partial


@dataclass
class FakeLLM:
    """Stands in for llama-server: each prefill waits until the test releases it (or fails it)."""

    speaking: bool = False
    concurrent: int = 0
    max_concurrent: int = 0
    calls: list[str] = field(default_factory=list)
    sent_while_silent: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail_every: int = 0

    async def prefill(self, context: LLMContext) -> PromptUsage:
        text = str(context.messages[-1]["content"])  # type: ignore[typeddict-item]
        self.calls.append(text)
        if not self.speaking:
            self.sent_while_silent.append(text)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await self.release.wait()
            self.release.clear()
            if self.fail_every and len(self.calls) % self.fail_every == 0:
                raise ConnectionError("llama-server is down")
            return PromptUsage(prompt_tokens=len(text), cached_tokens=0)
        finally:
            self.concurrent -= 1


def frame_for(kind: str, text: str) -> Frame | None:
    if kind == "vad_start":
        return VADUserStartedSpeakingFrame()
    if kind == "vad_stop":
        return VADUserStoppedSpeakingFrame()
    if kind == "partial":
        return InterimTranscriptionFrame(text=text, user_id="caller", timestamp="")
    if kind == "final":
        return TranscriptionFrame(text=text, user_id="caller", timestamp="")
    if kind == "turn_end":
        return UserStoppedSpeakingFrame()
    return None


@given(ops=st.lists(op, min_size=1, max_size=25), fail_every=st.sampled_from([0, 2]))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_processor_passes_every_frame_in_order_and_prefills_one_at_a_time_while_speaking(
    ops: list[tuple[str, str]], fail_every: int
) -> None:
    asyncio.run(_run_processor(ops, fail_every))


async def _run_processor(ops: list[tuple[str, str]], fail_every: int) -> None:
    llm = FakeLLM(fail_every=fail_every)
    prefill = LLMPrefill(llm, LLMContext(messages=[{"role": "assistant", "content": "Hello, how can I help?"}]),
                         call_id="test-call")
    sent: list[Frame] = []
    async with Harness(prefill) as h:
        for kind, text in ops:
            if kind.startswith("done"):
                llm.release.set()
                await asyncio.sleep(0.01)
                continue
            frame = frame_for(kind, text)
            assert frame is not None
            if kind == "vad_start":
                llm.speaking = True
            # the VAD and turn frames come upstream from the aggregator, as in the call's pipeline
            if isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame, UserStoppedSpeakingFrame)):
                await h.down.push_frame(frame, FrameDirection.UPSTREAM)
                assert await h.wait_for(lambda f=frame: f in h.up.frames, timeout=10)  # type: ignore[misc]
            else:
                sent.append(frame)
                await h.send(frame)
                assert await h.wait_for(lambda f=frame: f in h.down.frames, timeout=10)  # type: ignore[misc]
            if kind == "vad_stop":
                llm.speaking = False
        passed = [f for f in h.down.frames if isinstance(f, (InterimTranscriptionFrame, TranscriptionFrame))]
        assert passed == sent, "every frame passes on, unchanged and in order"
        task = prefill._task
    assert llm.max_concurrent <= 1
    assert llm.sent_while_silent == []
    assert prefill.sent == len(llm.calls)
    # the pipeline's end cancelled what was still in flight
    assert task is None or task.done()
    assert prefill.sent == prefill.completed + prefill.failed + prefill.cancelled


async def test_a_failing_llm_is_counted_and_the_call_goes_on() -> None:
    llm = FakeLLM(fail_every=1)
    llm.release.set()
    prefill = LLMPrefill(llm, LLMContext(), call_id="test-call")
    async with Harness(prefill) as h:
        await h.down.push_frame(VADUserStartedSpeakingFrame(), FrameDirection.UPSTREAM)
        llm.speaking = True
        await h.send(InterimTranscriptionFrame(text="예약 을", user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: prefill.failed == 1, timeout=10)
        llm.release.set()
        await h.send(InterimTranscriptionFrame(text="예약 을 하고", user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: prefill.failed == 2, timeout=10)
        await h.send(TranscriptionFrame(text="예약 을 하고 싶어요", user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: len(h.down.of(TranscriptionFrame)) == 1, timeout=10)
    assert prefill.completed == 0


async def partial_then_pause(h: Harness, prefill: LLMPrefill) -> None:
    """The caller speaks, a partial is prefilled, then the caller pauses."""
    await h.down.push_frame(VADUserStartedSpeakingFrame(), FrameDirection.UPSTREAM)
    await h.send(InterimTranscriptionFrame(text="예약 을", user_id="caller", timestamp=""))
    assert await h.wait_for(lambda: prefill.completed == 1, timeout=10)
    await h.down.push_frame(UserPausedFrame(), FrameDirection.UPSTREAM)
    assert await h.wait_for(lambda: len(h.up.of(UserPausedFrame)) == 1, timeout=10)


async def test_a_pause_leaves_the_slot_to_the_preemptive_request_until_the_caller_resumes() -> None:
    """With preemptive replies the pause's forced final starts the real request: no prefill competes."""
    llm = FakeLLM()
    llm.release.set()
    prefill = LLMPrefill(llm, LLMContext(), call_id="test-call", stop_at_pause=True)
    async with Harness(prefill) as h:
        await partial_then_pause(h, prefill)
        await h.send(TranscriptionFrame(text="예약 을 하고 싶어요", user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: len(h.down.of(TranscriptionFrame)) == 1, timeout=10)
        await asyncio.sleep(0.05)
        assert llm.calls == ["예약 을"], "nothing is prefilled during the pause"
        llm.release.set()
        await h.down.push_frame(UserResumedFrame(), FrameDirection.UPSTREAM)
        await h.send(InterimTranscriptionFrame(text="내일 오후", user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: prefill.completed == 2, timeout=10)
    assert llm.calls[-1] == "예약 을 하고 싶어요 내일 오후"


async def test_the_pause_final_is_prefilled_and_the_stop_ends_prefilling() -> None:
    """Without preemptive replies the real request comes at the VAD's stop, after the pause's final:
    that final (the partials plus Vosk's last word) is put in the cache first."""
    llm = FakeLLM()
    llm.release.set()
    prefill = LLMPrefill(llm, LLMContext(), call_id="test-call")
    async with Harness(prefill) as h:
        await partial_then_pause(h, prefill)
        llm.release.set()
        await h.send(TranscriptionFrame(text="예약 을 하고 싶어요", user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: prefill.completed == 2, timeout=10)
        assert llm.calls == ["예약 을", "예약 을 하고 싶어요"]
        await h.down.push_frame(VADUserStoppedSpeakingFrame(), FrameDirection.UPSTREAM)
        await h.send(InterimTranscriptionFrame(text="예약 을 하고 싶어요 네", user_id="caller", timestamp=""))
        await asyncio.sleep(0.05)
    assert llm.calls == ["예약 을", "예약 을 하고 싶어요"], "nothing after the stop"


# --- the real llama-server ------------------------------------------------------------------------

SYSTEM = ("You are a helpful voice assistant answering a phone call for a dental clinic. Always answer "
          "in English, in one or two short, plain sentences.")
GREETING = "Hello, this is the clinic's assistant. How can I help you today?"
# (partial, final) pairs as Vosk gives them: the final is the partial plus the last word
QUESTION_A = ("내일 오후 세시에 치과 예약을 하고", "내일 오후 세시에 치과 예약을 하고 싶어요")
QUESTION_B = ("다음 주 월요일 아침에 진료를 받을 수", "다음 주 월요일 아침에 진료를 받을 수 있나요")


async def n_tokens(llama: SidecarProcess, text: str) -> int:
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{llama.port}/tokenize",
                                                    json={"content": text}) as r:
        return len((await r.json())["tokens"])


async def cached_tokens_of_turn(llm: LlamaLLMService, h: Harness, final: str) -> int:
    context = LLMContext(messages=[{"role": "assistant", "content": GREETING},
                                   {"role": "user", "content": final}])
    done = len(h.down.of(LLMFullResponseEndFrame))
    await h.send(LLMContextFrame(context))
    assert await h.wait_for(lambda: len(h.down.of(LLMFullResponseEndFrame)) > done)
    assert llm.last_cached_tokens is not None
    return llm.last_cached_tokens


@pytest.mark.slow
async def test_the_turn_request_finds_the_prefilled_partial_in_llama_servers_cache(llama: SidecarProcess) -> None:
    llm = LlamaLLMService(base_url=f"http://127.0.0.1:{llama.port}/v1", system_prompt=SYSTEM, max_tokens=8)
    await llm.warm_up(GREETING)
    conversation = LLMContext(messages=[{"role": "assistant", "content": GREETING}])
    prefill = LLMPrefill(llm, conversation, call_id="test-call")
    async with Harness(llm) as h_llm, Harness(prefill) as h:
        # without a prefill: the cache holds the system prompt and the greeting (the warm-up)
        without = await cached_tokens_of_turn(llm, h_llm, QUESTION_A[1])

        # with one: the caller speaks, Vosk's partial comes in, and the VAD stops
        partial, final = QUESTION_B
        await h.down.push_frame(VADUserStartedSpeakingFrame(), FrameDirection.UPSTREAM)
        assert await h.wait_for(lambda: bool(h.up.of(VADUserStartedSpeakingFrame)))
        await h.send(InterimTranscriptionFrame(text=partial, user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: prefill.completed + prefill.failed == 1)
        assert prefill.failed == 0
        await h.down.push_frame(VADUserStoppedSpeakingFrame(), FrameDirection.UPSTREAM)
        await h.send(TranscriptionFrame(text=final, user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: bool(h.down.of(TranscriptionFrame)))
        with_prefill = await cached_tokens_of_turn(llm, h_llm, final)
    assert prefill.sent == 1
    # the prefill request is the turn's request up to the transcript: the same messages, same prefix
    partial_tokens = await n_tokens(llama, partial)
    # every token of the partial but the last (a word boundary may merge differently) came from the cache
    assert with_prefill >= without + partial_tokens - 2, (without, with_prefill, partial_tokens)


QUESTION_C = ("어제 받은 진료 때문에 이가 아직도 많이 아프고 잇몸이",
              "어제 받은 진료 때문에 이가 아직도 많이 아프고 잇몸이 부었어요")


@pytest.mark.slow
async def test_a_reply_asked_for_while_the_prefill_is_evaluated_still_finds_it_cached(
    llama: SidecarProcess,
) -> None:
    """The VAD stop cancels the prefill in flight, and the reply's request follows at once: llama-server
    evaluates a prompt in one decode step and assigns the next request a slot only after it, when the
    prefill's slot is free again, so the reply lands on it (with --parallel 2 the other slot is idle)."""
    llm = LlamaLLMService(base_url=f"http://127.0.0.1:{llama.port}/v1", system_prompt=SYSTEM, max_tokens=8)
    await llm.warm_up(GREETING)
    prefill = LLMPrefill(llm, LLMContext(messages=[{"role": "assistant", "content": GREETING}]), call_id="test-call")
    partial, final = QUESTION_C
    async with Harness(llm) as h_llm, Harness(prefill) as h:
        without = await cached_tokens_of_turn(llm, h_llm, QUESTION_A[1])
        await h.down.push_frame(VADUserStartedSpeakingFrame(), FrameDirection.UPSTREAM)
        assert await h.wait_for(lambda: bool(h.up.of(VADUserStartedSpeakingFrame)))
        await h.send(InterimTranscriptionFrame(text=partial, user_id="caller", timestamp=""))
        assert await h.wait_for(lambda: prefill.sent == 1)
        await h.down.push_frame(VADUserStoppedSpeakingFrame(), FrameDirection.UPSTREAM)
        assert await h.wait_for(lambda: prefill.cancelled == 1)
        with_prefill = await cached_tokens_of_turn(llm, h_llm, final)
    partial_tokens = await n_tokens(llama, partial)
    assert with_prefill >= without + partial_tokens - 2, (without, with_prefill, partial_tokens)


class RecordingServer:
    """An OpenAI-style endpoint that keeps every JSON body posted to it (a unit test of the client)."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[Any] = []
        self.status = status
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        if self.status != 200:
            return web.json_response({"error": {"message": "busy"}}, status=self.status)
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 0, "model": "local",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "I"}}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 1, "total_tokens": 43,
                      "prompt_tokens_details": {"cached_tokens": 30}},
        })

    async def __aenter__(self) -> RecordingServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@given(history=st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.sampled_from(WORDS)), max_size=4),
       said=st.text(min_size=1, max_size=30))
@settings(max_examples=25, deadline=None)
def test_the_prefill_posts_exactly_what_the_openai_client_would_post(
    history: list[tuple[str, str]], said: str
) -> None:
    """The prefill skips the OpenAI client for CPU's sake; its body must stay the one the client sends,
    or the reply's prompt would no longer begin with the tokens the prefill cached."""

    async def run() -> tuple[list[Any], PromptUsage, LlamaLLMService]:
        async with RecordingServer() as server:
            llm = LlamaLLMService(base_url=f"http://127.0.0.1:{server.port}/v1", system_prompt="Be brief.")
            messages: list[LLMContextMessage] = [{"role": role, "content": text} for role, text in history]
            context = LLMContext(messages=[*messages, {"role": "user", "content": said}])
            usage = await llm.prefill(context)
            await llm._client.chat.completions.create(**await llm.prefill_request(context))
            await llm.cleanup()
        return server.bodies, usage, llm

    (lean, client), usage, llm = asyncio.run(run())
    assert lean == client
    assert lean["max_tokens"] == 1 and lean["stream"] is False and lean["cache_prompt"] is True
    assert usage == PromptUsage(prompt_tokens=42, cached_tokens=30)
    assert llm._prefill_http is None  # cleanup closed the session


async def test_a_prefill_the_server_refuses_is_counted_as_failed_and_not_retried() -> None:
    async with RecordingServer(status=503) as server:
        llm = LlamaLLMService(base_url=f"http://127.0.0.1:{server.port}/v1", system_prompt="Be brief.")
        prefill = LLMPrefill(llm, LLMContext(messages=[]), call_id="test-call")
        ok = await prefill._prefill(LLMContext(messages=[{"role": "user", "content": "hello"}]))
        await llm.cleanup()
    assert not ok and prefill.failed == 1 and prefill.completed == 0
    assert len(server.bodies) == 1
