"""Fixtures: a real OTLP receiver per test, and a process-wide tracer provider exporting to a
session receiver (OpenTelemetry takes one global provider per process; Pipecat's spans use it).

A later real-call test uses them as::

    def test_call_trace(global_tracing, session_otlp_receiver): ...
    spans = session_otlp_receiver.trace_of(call_id)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ivrbot.telemetry.setup import Tracing, TracingConfig, configure_tracing

from .otlp_receiver import OtlpReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def session_otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def global_tracing(session_otlp_receiver: OtlpReceiver) -> Iterator[Tracing]:
    """The bot's tracing installed as OpenTelemetry's global provider, exporting over OTLP/HTTP."""
    env = session_otlp_receiver.env("http/protobuf", OTEL_SERVICE_NAME="ivrbot-test", OTEL_BSP_SCHEDULE_DELAY="50")
    tracing = configure_tracing(TracingConfig.from_env(env), install_global=True)
    yield tracing
    tracing.shutdown(timeout_s=5)
