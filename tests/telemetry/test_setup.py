"""Tracing configuration from OTEL_* variables, off without an endpoint, and a dead collector."""

from __future__ import annotations

import socket
import threading

import pytest
from opentelemetry import trace

from ivrbot.telemetry.calls import CallTrace
from ivrbot.telemetry.setup import TracingConfig, TracingConfigError, configure_tracing

from .call_script import T0, play_call


def test_no_endpoint_means_off() -> None:
    cfg = TracingConfig.from_env({"OTEL_SERVICE_NAME": "x"})
    assert not cfg.enabled
    threads_before = {t.name for t in threading.enumerate()}
    tracing = configure_tracing(cfg, install_global=False)
    assert not tracing.enabled
    tracer = tracing.tracer()
    assert isinstance(tracer, trace.NoOpTracer)
    ct = CallTrace("off@x", tracer=tracer, t_start=T0)
    play_call(ct)  # the whole call runs, latency bookkeeping included
    assert not ct.span.is_recording()
    assert ct.turns_completed == 2
    assert ct.trace_id == "0" * 32
    assert not any(t.name.startswith("OtelBatch") for t in threading.enumerate() if t.name not in threads_before)
    assert tracing.shutdown() is True


@pytest.mark.parametrize(
    ("env", "endpoint", "protocol"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "http://jaeger:4318/v1/traces", "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}, "http://jaeger:4318/v1/traces", "http/protobuf"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/x"},
            "http://b/x",
            "http/protobuf",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http://jaeger:4317",
            "grpc",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_SDK_DISABLED": "true"}, None, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_TRACES_EXPORTER": "none"}, None, "http/protobuf"),
    ],
)
def test_endpoint_rules(env: dict[str, str], endpoint: str | None, protocol: str) -> None:
    cfg = TracingConfig.from_env(env)
    assert cfg.endpoint == endpoint
    assert cfg.protocol == protocol


def test_service_name_and_resource_attributes() -> None:
    cfg = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318",
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=bot-0, k8s.node.name=node%201,service.name=fromres",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        }
    )
    assert cfg.service_name == "fromres"
    assert cfg.resource_attributes["k8s.node.name"] == "node 1"
    assert cfg.timeout_s == 2.5
    assert cfg.max_queue_size == 100
    assert (
        TracingConfig.from_env({"OTEL_SERVICE_NAME": "svc", "OTEL_RESOURCE_ATTRIBUTES": "service.name=r"}).service_name
        == "svc"
    )
    assert TracingConfig.from_env({}).service_name == "ivrbot"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_RESOURCE_ATTRIBUTES": "novalue"},
        {"OTEL_BSP_MAX_QUEUE_SIZE": "-3"},
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str]) -> None:
    with pytest.raises(TracingConfigError):
        TracingConfig.from_env(env)


class Blackhole:
    """A TCP collector that accepts connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connected = threading.Event()
        self.release = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            self.connected.set()

    def close(self) -> None:
        self.release.set()
        self._thread.join(5)
        for c in self._conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_hung_collector_never_blocks_the_caller(protocol: str) -> None:
    hole = Blackhole()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            # An export to the hung collector waits 10 minutes: a caller that waited on export
            # would still be waiting when the burst below is checked.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "600000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8",
            "OTEL_BSP_SCHEDULE_DELAY": "10",
        }
        tracing = configure_tracing(TracingConfig.from_env(env), install_global=False)
        tracer = tracing.tracer()
        errors: list[BaseException] = []
        burst_done = threading.Event()

        def media_path() -> None:
            try:
                for _ in range(8):
                    tracer.start_span("warm").end()
                # The exporter is now stuck inside an export. A burst of calls far beyond the
                # queue size must still complete, without raising.
                if not hole.connected.wait(30):
                    raise AssertionError("the exporter never reached the collector")
                for i in range(40):
                    play_call(CallTrace(f"c{i}", tracer=tracer, t_start=T0))
                burst_done.set()
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=media_path, daemon=True)
        worker.start()
        worker.join(60)  # a bound against a hang, not a timing assertion
        assert errors == []
        assert burst_done.is_set(), "ending spans waited for the hung collector"
        # Shutdown gives up after its bound instead of hanging the bot's exit.
        done = threading.Event()

        def stop() -> None:
            tracing.shutdown(timeout_s=1.0)
            done.set()

        threading.Thread(target=stop, daemon=True).start()
        assert done.wait(60), "shutdown hung on the collector"
    finally:
        hole.close()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_refused_collector_does_not_raise(protocol: str) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    tracing = configure_tracing(TracingConfig.from_env(env), install_global=False)
    ct = CallTrace("refused", tracer=tracing.tracer(), t_start=T0)
    play_call(ct)
    assert ct.ended
    tracing.force_flush(timeout_s=0.5)  # the export error stays in the exporter thread
    tracing.shutdown(timeout_s=0.5)
    assert not tracing.enabled
