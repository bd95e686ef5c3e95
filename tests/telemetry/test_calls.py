"""CallTrace turn logic: budgets, logs, metrics, abandoned turns; spans checked over real OTLP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from ivrbot.metrics import Metrics
from ivrbot.telemetry.budget import LatencyBudget
from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.setup import Tracing, TracingConfig, configure_tracing

from .otlp_receiver import OtlpReceiver, children


@pytest.fixture
def tracing(otlp_receiver: OtlpReceiver) -> Iterator[Tracing]:
    t = configure_tracing(TracingConfig.from_env(otlp_receiver.env()), install_global=False)
    yield t
    t.shutdown(timeout_s=5)


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_budget_overrun_logs_stage_and_amount_with_call_id(tracing: Tracing) -> None:
    metrics = Metrics()
    ct = CallTrace("slow-call", tracer=tracing.tracer(), metrics=metrics, t_start=0.0)
    with capture_logs() as logs:
        ct.user_stopped_speaking(1.0)
        ct.transcript_final(1.8)  # 800 ms against 500
        ct.llm_first_token(1.9)
        ct.tts_first_audio(2.0)
        ct.mark_first_packet_sent(2.05)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(w["stage"], w["over_ms"], w["call_id"]) for w in warnings] == [("vad_to_stt", 300.0, "slow-call")]
    assert warnings[0]["event"] == "latency budget exceeded"
    assert sample(metrics, "ivrbot_latency_budget_exceeded_total", {"stage": "vad_to_stt"}) == 1
    assert sample(metrics, "ivrbot_stage_latency_seconds_count", {"stage": "vad_to_stt"}) == 1
    assert sample(metrics, "ivrbot_stage_latency_seconds_sum", {"stage": "vad_to_stt"}) == pytest.approx(0.8)
    assert sample(metrics, "ivrbot_turn_latency_seconds_sum") == pytest.approx(1.05)
    assert sample(metrics, "ivrbot_turn_latency_seconds_bucket", {"le": "1.25"}) == 1
    assert sample(metrics, "ivrbot_turn_latency_seconds_bucket", {"le": "1.0"}) == 0


def test_configurable_budget() -> None:
    budget = LatencyBudget.from_env({"IVRBOT_BUDGET_VAD_TO_STT_MS": "900", "IVRBOT_BUDGET_TOTAL_MS": "0"})
    assert budget.vad_to_stt == 0.9 and budget.total is None and budget.stt_to_llm == 0.4
    ct = CallTrace("b", budget=budget, t_start=0.0)
    with capture_logs() as logs:
        ct.user_stopped_speaking(1.0)
        ct.transcript_final(1.8)
        ct.llm_first_token(1.9)
        ct.tts_first_audio(3.0)  # 1.1 s against 0.7
        ct.mark_first_packet_sent(3.1)  # total 2.1 s: no total budget
    assert [e["stage"] for e in logs if e["log_level"] == "warning"] == ["llm_to_tts"]
    with pytest.raises(ValueError, match="IVRBOT_BUDGET_TOTAL_MS"):
        LatencyBudget.from_env({"IVRBOT_BUDGET_TOTAL_MS": "fast"})


def test_turns_abandoned_noise_and_early_transcripts(tracing: Tracing, otlp_receiver: OtlpReceiver) -> None:
    ct = CallTrace("mixed", tracer=tracing.tracer(), t_start=0.0)
    ct.answered(0.01)
    # Greeting audio before any turn: ignored.
    ct.tts_first_audio(0.2)
    ct.mark_first_packet_sent(0.25)
    # VAD blip without words: no turn, number 1 stays free.
    ct.user_started_speaking(1.0)
    ct.user_stopped_speaking(1.2)
    # Caller pauses, gets a transcript, then speaks again before any reply: turn 1 abandoned.
    ct.user_started_speaking(2.0)
    ct.user_stopped_speaking(3.0)
    ct.transcript_final(3.2)
    ct.user_started_speaking(3.4)
    # Out-of-order moments are ignored: a token before a transcript belongs to nothing.
    ct.user_stopped_speaking(5.0)
    ct.llm_first_token(5.05)
    ct.transcript_final(5.3)
    ct.llm_first_token(5.5)
    ct.tts_first_audio(5.9)
    ct.mark_first_packet_sent(6.0)
    ct.mark_first_packet_sent(6.5)  # later packets of the same reply change nothing
    # ASR endpointing beat the VAD: the transcript is final before the VAD stop.
    ct.user_started_speaking(8.0)
    ct.transcript_final(9.0)
    ct.user_stopped_speaking(9.3)
    ct.llm_first_token(9.6)
    ct.tts_first_audio(9.8)
    ct.mark_first_packet_sent(9.9)
    # Hang-up mid-turn closes the open turn.
    ct.user_started_speaking(11.0)
    ct.user_stopped_speaking(12.0)
    ct.transcript_final(12.4)
    ct.end("caller_bye", 12.5)
    assert ct.turns_completed == 2
    assert tracing.force_flush(10)

    spans = otlp_receiver.trace_of("mixed")
    call = next(s for s in spans if s.name == "call")
    turns = [s for s in children(spans, call) if s.name == "turn"]
    summary = [
        (t.attributes["turn.number"], t.attributes["turn.complete"], t.attributes["turn.interrupted"]) for t in turns
    ]
    assert summary == [(1, False, True), (2, True, False), (3, True, False), (4, False, True)]
    t1, t2, t3, t4 = turns
    assert t1.attributes["vad_to_stt_ms"] == pytest.approx(200.0)
    assert "total_ms" not in t1.attributes
    assert [c.name for c in children(spans, t1)] == ["stt"]
    assert t2.attributes["stt_to_llm_ms"] == pytest.approx(200.0)  # the early token was ignored
    assert t2.attributes["total_ms"] == pytest.approx(1000.0)
    assert t3.attributes["stt.before_vad"] is True
    assert t3.attributes["vad_to_stt_ms"] == 0.0
    assert t3.attributes["total_ms"] == pytest.approx(600.0)
    assert t4.end_ns - t4.start_ns == pytest.approx(0.5e9, abs=1e3)
    assert call.attributes["call.turns"] == 2


def test_rejected_call_is_one_short_trace(tracing: Tracing, otlp_receiver: OtlpReceiver) -> None:
    ct = CallTrace("busy-call", tracer=tracing.tracer(), t_start=0.0)
    ct.sip_event("100 Trying sent", 0.001)
    ct.rejected(486, "busy", 0.002)
    ct.answered(0.003)  # ignored after the end
    ct.end("again", 0.004)  # idempotent
    assert tracing.force_flush(10)
    spans = otlp_receiver.trace_of("busy-call")
    assert sorted(s.name for s in spans) == ["call", "sip.invite"]
    invite = next(s for s in spans if s.name == "sip.invite")
    call = next(s for s in spans if s.name == "call")
    assert invite.attributes["sip.status_code"] == 486
    assert call.attributes["call.end_reason"] == "busy"
    assert "sip.answered" not in call.attributes


async def test_create_task_parents_unparented_spans_under_call(tracing: Tracing, otlp_receiver: OtlpReceiver) -> None:
    ct = CallTrace("ctx-call", tracer=tracing.tracer(), t_start=0.0)
    tracer = tracing.tracer("other.library")

    async def work() -> None:
        tracer.start_span("conversation").end()  # no explicit parent, like Pipecat's

    await ct.create_task(work())
    tracer.start_span("outside").end()
    ct.end("done", 1.0)
    assert tracing.force_flush(10)
    spans = otlp_receiver.trace_of("ctx-call")
    conv = next(s for s in spans if s.name == "conversation")
    call = next(s for s in spans if s.name == "call")
    assert conv.parent_span_id == call.span_id
    outside = otlp_receiver.wait_for(lambda ss: any(s.name == "outside" for s in ss))
    assert next(s for s in outside if s.name == "outside").trace_id != call.trace_id
