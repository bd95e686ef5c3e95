"""A real call's trace, exported by `ivrbot serve` over OTLP/HTTP to a real receiver and decoded
from protobuf: one trace per call, keyed by the SIP Call-ID, with the turn and its stage spans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_asyncio

from ivrbot_tools.demo import ask_one_question
from ivrbot_tools.local import LocalBot
from ivrbot_tools.otlp_receiver import OtlpReceiver, ReceivedSpan, children

from .conftest import BotFactory
from .support import question_pcm8k, tools_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.skipif(tools_missing(), reason="needs sipp, espeak-ng and sox"),
]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(grpc_enabled=False) as r:
        yield r


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def traced_bot(make_bot: BotFactory, receiver: OtlpReceiver) -> LocalBot:
    env = receiver.env("http/protobuf", OTEL_SERVICE_NAME="ivrbot-e2e", OTEL_BSP_SCHEDULE_DELAY="200")
    return await make_bot(IVRBOT_GREETING="", IVRBOT_MAX_TOKENS="40", **env)


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one {name!r} span, got {[s.name for s in spans]}"
    return found[0]


async def test_a_call_is_one_trace_with_its_turn_and_stages(traced_bot: LocalBot, receiver: OtlpReceiver) -> None:
    result = await ask_one_question(traced_bot, question_pcm8k(), wait_greeting=False)
    assert result["caller_latency_ms"] is not None, "the caller heard no reply"
    call_id = result["call_id"]

    # the call span ends when the call does: wait for our complete turn, then for the whole trace
    receiver.wait_for(
        lambda ss: any(s.name == "call" and s.attributes.get("sip.call_id") == call_id for s in ss), timeout=30
    )
    spans = receiver.trace_of(call_id)
    root = one(spans, "call")
    assert root.parent_span_id == ""
    assert root.attributes["sip.call_id"] == call_id
    assert root.resource.get("service.name") == "ivrbot-e2e"
    assert {s.trace_id for s in spans} == {root.trace_id}

    top = {s.name for s in children(spans, root)}
    assert {"sip.invite", "rtp.session", "turn"} <= top
    turns = [s for s in children(spans, root) if s.name == "turn" and s.attributes.get("turn.complete")]
    assert turns, "no complete turn under the call span"
    turn = turns[0]
    stages = {s.name: s for s in children(spans, turn)}
    assert {"stt", "llm", "tts", "rtp.send"} <= set(stages)
    for name, attr in (("stt", "vad_to_stt_ms"), ("llm", "stt_to_llm_ms"), ("tts", "llm_to_tts_ms")):
        assert turn.attributes[attr] >= 0
        assert stages[name].start_ns >= turn.start_ns and stages[name].end_ns <= turn.end_ns
    # the stages follow each other: each starts where the previous ended
    assert stages["stt"].end_ns == stages["llm"].start_ns
    assert stages["llm"].end_ns == stages["tts"].start_ns
    assert stages["tts"].end_ns == stages["rtp.send"].start_ns
    assert turn.attributes["total_ms"] >= turn.attributes["vad_to_stt_ms"]

    # Pipecat's own conversation span is part of the same trace, under the call
    conversation = [s for s in spans if s.name == "conversation"]
    assert conversation and all(s.parent_span_id == root.span_id for s in conversation)
    # ... found by the same Call-ID (the wiring CallAssistant uses: worker_tracing_kwargs)
    assert all(s.attributes.get("sip.call_id") == call_id == s.attributes.get("conversation.id") for s in conversation)
