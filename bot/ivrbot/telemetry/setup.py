"""Tracing set-up from the standard ``OTEL_*`` environment variables.

Off (no provider, no exporter thread, no-op spans) unless an OTLP endpoint is configured, so a
bot without a collector pays nothing. When on, spans leave through a ``BatchSpanProcessor``
whose queue is bounded: ending a span only appends to a deque, the export runs on the SDK's own
thread, and a slow or dead collector costs dropped spans, never a stalled media path.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from ivrbot.logs import get_logger

Protocol = Literal["grpc", "http/protobuf"]

DEFAULT_SERVICE_NAME = "ivrbot"
TRACER_NAME = "ivrbot"

log = get_logger(__name__)


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value the bot cannot use."""


def _parse_pairs(raw: str, what: str) -> dict[str, str]:
    """``k=v,k2=v2`` with percent-encoded values (W3C baggage style, as the OTel spec says)."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TracingConfigError(f"{what}: expected key=value, got {item!r}")
        pairs[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return pairs


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise TracingConfigError(f"{name}: not an integer: {raw!r}") from exc
    if value <= 0:
        raise TracingConfigError(f"{name}: must be positive, got {value}")
    return value


@dataclass(frozen=True)
class TracingConfig:
    """What the OTLP exporter needs; ``endpoint is None`` means tracing is off."""

    endpoint: str | None = None
    protocol: Protocol = "http/protobuf"
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = True
    timeout_s: float = 10.0
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_ms: int = 1000

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingConfig:
        """Read the spec's variables; the traces-specific ones win over the generic ones.

        For ``http/protobuf`` a generic ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets ``/v1/traces``
        appended while ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is (the spec's rule).
        """
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip()

        protocol_raw = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or get("OTEL_EXPORTER_OTLP_PROTOCOL")
        protocol_raw = protocol_raw or "http/protobuf"
        if protocol_raw not in ("grpc", "http/protobuf"):
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol_raw!r} (supported: grpc, http/protobuf)")
        protocol: Protocol = "grpc" if protocol_raw == "grpc" else "http/protobuf"
        disabled = get("OTEL_SDK_DISABLED").lower() == "true" or get("OTEL_TRACES_EXPORTER") == "none"
        traces_ep = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        generic_ep = get("OTEL_EXPORTER_OTLP_ENDPOINT")
        endpoint: str | None
        if disabled or not (traces_ep or generic_ep):
            endpoint = None
        elif traces_ep:
            endpoint = traces_ep
        elif protocol == "http/protobuf":
            endpoint = generic_ep.rstrip("/") + "/v1/traces"
        else:
            endpoint = generic_ep
        insecure_raw = (get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or get("OTEL_EXPORTER_OTLP_INSECURE")).lower()
        insecure = insecure_raw == "true" or (not insecure_raw and not (endpoint or "").startswith("https://"))
        timeout_raw = get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or get("OTEL_EXPORTER_OTLP_TIMEOUT")
        try:
            # The spec gives milliseconds; Python's exporters once read seconds, so small values are seconds.
            timeout_s = float(timeout_raw) if timeout_raw else 10.0
        except ValueError as exc:
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_TIMEOUT: not a number: {timeout_raw!r}") from exc
        if timeout_s > 100:
            timeout_s /= 1000.0
        resource = _parse_pairs(get("OTEL_RESOURCE_ATTRIBUTES"), "OTEL_RESOURCE_ATTRIBUTES")
        headers = _parse_pairs(
            get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or get("OTEL_EXPORTER_OTLP_HEADERS"),
            "OTEL_EXPORTER_OTLP_HEADERS",
        )
        service_name = get("OTEL_SERVICE_NAME") or resource.get("service.name") or DEFAULT_SERVICE_NAME
        return cls(
            endpoint=endpoint,
            protocol=protocol,
            service_name=service_name,
            resource_attributes=resource,
            headers=headers,
            insecure=insecure,
            timeout_s=timeout_s,
            max_queue_size=_env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            max_export_batch_size=_env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
            schedule_delay_ms=_env_int(env, "OTEL_BSP_SCHEDULE_DELAY", 1000),
        )


class _QueueFullFilter(logging.Filter):
    """The SDK warns once per dropped span; with a dead collector that floods stderr."""

    def __init__(self, every: int = 1000) -> None:
        super().__init__()
        self._every = every
        self._seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        self._seen += 1
        return self._seen % self._every == 1


_queue_full_filter = _QueueFullFilter()


def make_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter for the configured protocol (imported lazily: gRPC is heavy)."""
    if config.endpoint is None:
        raise TracingConfigError("no OTLP endpoint configured")
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        target = config.endpoint
        for scheme in ("http://", "https://"):
            target = target.removeprefix(scheme)
        return GrpcExporter(
            endpoint=target,
            insecure=config.insecure,
            headers=dict(config.headers) or None,
            timeout=config.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=config.endpoint, headers=dict(config.headers) or None, timeout=config.timeout_s)


class Tracing:
    """The bot's tracer provider (or its absence) and a bounded shutdown."""

    def __init__(self, config: TracingConfig, provider: TracerProvider | None) -> None:
        self.config = config
        self.provider = provider

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer(self, name: str = TRACER_NAME) -> trace.Tracer:
        """A recording tracer when on; OTel's no-op tracer when off."""
        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(name)

    def _bounded(self, fn_name: str, timeout_s: float) -> bool:
        provider = self.provider
        if provider is None:
            return True
        result: list[bool] = []

        def run() -> None:
            if fn_name == "flush":
                result.append(provider.force_flush(int(timeout_s * 1000)))
            else:
                provider.shutdown()
                result.append(True)

        # The SDK's flush ignores its timeout and waits on the exporter; a thread bounds it.
        worker = threading.Thread(target=run, name=f"ivrbot-otel-{fn_name}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        return bool(result and result[0])

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is queued; False if that did not finish within ``timeout_s``.

        True does not mean the collector took the spans: a failed export is logged by the SDK.
        """
        return self._bounded("flush", timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush then stop the exporter thread, giving up after ``timeout_s`` (never hangs the exit)."""
        if self.provider is None:
            return True
        flushed = self.force_flush(timeout_s)
        self._bounded("shutdown", max(0.5, timeout_s / 2))
        self.provider = None
        return flushed


def configure_tracing(
    config: TracingConfig | None = None,
    *,
    install_global: bool = True,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """Build the provider from ``config`` (default: the environment).

    ``install_global`` makes it OpenTelemetry's global provider, which is where Pipecat's own
    spans (conversation, turn, stt/llm/tts) get their tracer, so both land in the same export.
    OpenTelemetry accepts a global provider once per process.
    """
    config = TracingConfig.from_env() if config is None else config
    if not config.enabled and exporter is None:
        log.info("tracing off: no OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT")
        return Tracing(config, None)
    resource = Resource.create({**config.resource_attributes, "service.name": config.service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter or make_exporter(config),
            max_queue_size=config.max_queue_size,
            max_export_batch_size=min(config.max_export_batch_size, config.max_queue_size),
            schedule_delay_millis=config.schedule_delay_ms,
        )
    )
    logging.getLogger("opentelemetry.sdk._shared_internal").addFilter(_queue_full_filter)
    if install_global:
        trace.set_tracer_provider(provider)
    log.info(
        "tracing on",
        endpoint=config.endpoint,
        protocol=config.protocol,
        service_name=config.service_name,
    )
    return Tracing(config, provider)
