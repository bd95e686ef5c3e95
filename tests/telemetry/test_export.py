"""The span tree of a synthetic call, as received and decoded by a real OTLP endpoint."""

from __future__ import annotations

import pytest

from ivrbot.metrics import Metrics
from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.setup import TracingConfig, configure_tracing

from .call_script import T0, TURN1, TURN2, play_call
from .otlp_receiver import OtlpReceiver, ReceivedSpan, children


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans"
    return found[0]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_call_span_tree(otlp_receiver: OtlpReceiver, protocol: str) -> None:
    env = otlp_receiver.env(
        protocol, OTEL_SERVICE_NAME="ivrbot-e2e", OTEL_RESOURCE_ATTRIBUTES="k8s.pod.name=bot-0,k8s.node.name=n1"
    )
    tracing = configure_tracing(TracingConfig.from_env(env), install_global=False)
    ct = CallTrace(
        "a84b4c76e66710@pc33.example.com",
        tracer=tracing.tracer(),
        from_uri="sip:alice@example.com",
        to_uri="sip:ivr@bots.example.com",
        remote=("192.0.2.10", 5060),
        t_start=T0,
        metrics=Metrics(),
    )
    play_call(ct)
    assert tracing.shutdown(timeout_s=10)

    spans = otlp_receiver.trace_of("a84b4c76e66710@pc33.example.com")
    assert {s.transport for s in spans} == {"grpc" if protocol == "grpc" else "http"}
    assert all(s.resource["service.name"] == "ivrbot-e2e" for s in spans)
    assert all(s.resource["k8s.pod.name"] == "bot-0" for s in spans)

    call = one(spans, "call")
    assert call.parent_span_id == ""
    assert call.trace_id == ct.trace_id
    assert call.attributes["sip.from"] == "sip:alice@example.com"
    assert call.attributes["sip.to"] == "sip:ivr@bots.example.com"
    assert call.attributes["network.peer.address"] == "192.0.2.10"
    assert call.attributes["call.end_reason"] == "caller_bye"
    assert call.attributes["call.turns"] == 2
    assert call.duration_ms == pytest.approx(20001.0, abs=0.01)

    top = children(spans, call)
    assert [s.name for s in top] == ["sip.invite", "rtp.session", "turn", "turn", "sip.bye"]
    invite = one(spans, "sip.invite")
    assert invite.attributes["sip.status_code"] == 200
    assert [e.name for e in invite.events] == ["100 Trying sent", "200 OK sent"]
    assert invite.duration_ms == pytest.approx(50.0, abs=0.01)
    rtp = one(spans, "rtp.session")
    assert rtp.attributes["rtp.packets_lost"] == 2
    assert rtp.attributes["rtp.local_port"] == 40000

    turn1, turn2 = (s for s in top if s.name == "turn")
    for turn_span, moments, number in ((turn1, TURN1, 1), (turn2, TURN2, 2)):
        attrs = turn_span.attributes
        assert attrs["turn.number"] == number
        assert attrs["sip.call_id"] == "a84b4c76e66710@pc33.example.com"
        assert attrs["turn.complete"] is True
        assert attrs["vad_to_stt_ms"] == pytest.approx(ms(moments["stt"] - moments["vad"]))
        assert attrs["stt_to_llm_ms"] == pytest.approx(ms(moments["llm"] - moments["stt"]))
        assert attrs["llm_to_tts_ms"] == pytest.approx(ms(moments["tts"] - moments["llm"]))
        assert attrs["tts_to_rtp_ms"] == pytest.approx(ms(moments["rtp"] - moments["tts"]))
        assert attrs["total_ms"] == pytest.approx(ms(moments["rtp"] - moments["vad"]))
        assert turn_span.duration_ms == pytest.approx(attrs["total_ms"], abs=0.01)
        stages = children(spans, turn_span)
        assert [s.name for s in stages] == ["stt", "llm", "tts", "rtp.send"]
        bounds = [("vad", "stt"), ("stt", "llm"), ("llm", "tts"), ("tts", "rtp")]
        for stage_span, (a, b) in zip(stages, bounds, strict=True):
            assert stage_span.duration_ms == pytest.approx(ms(moments[b] - moments[a]), abs=0.01)
            # children lie inside their turn
            assert turn_span.start_ns <= stage_span.start_ns <= stage_span.end_ns <= turn_span.end_ns

    assert turn1.events == ()
    events = {e.attributes["stage"]: e for e in turn2.events}
    assert all(e.name == "budget_exceeded" for e in turn2.events)
    assert set(events) == {"llm_to_tts", "total"}
    assert events["llm_to_tts"].attributes["over_ms"] == pytest.approx(200.0)
    assert events["total"].attributes["over_ms"] == pytest.approx(200.0)
