"""A real OTLP trace endpoint (for tests and `ivrbot bench`): OTLP/HTTP (POST /v1/traces) and OTLP/gRPC (TraceService).

It decodes ``ExportTraceServiceRequest`` protobufs exactly as a collector would and keeps the
spans, so tests and the benchmark read what actually crossed the wire. Thread-based (http.server and grpcio's
thread pool), so it works from sync and async tests alike and across event loops.

    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint}           # or rx.grpc_endpoint + grpc
        ...
        spans = rx.wait_for(lambda spans: any(s.name == "call" for s in spans))
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

try:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    HAVE_GRPC = True
except ImportError:  # pragma: no cover - grpcio comes with the OTLP exporter here
    HAVE_GRPC = False


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as decoded from the wire (ids as lowercase hex, parent '' for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: tuple[ReceivedEvent, ...]
    status_code: int
    scope: str
    resource: dict[str, Any] = field(default_factory=dict)
    transport: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class OtlpReceiver:
    """Both OTLP transports on loopback ephemeral ports; ``spans`` is everything received so far."""

    def __init__(self, host: str = "127.0.0.1", *, grpc_enabled: bool = True) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._spans: list[ReceivedSpan] = []
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_server: Any = None
        self._grpc_enabled = grpc_enabled and HAVE_GRPC
        self.http_port = 0
        self.grpc_port = 0

    # endpoints
    @property
    def http_endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT with protocol http/protobuf."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """URL for OTEL_EXPORTER_OTLP_ENDPOINT with protocol grpc."""
        return f"http://{self.host}:{self.grpc_port}"

    def env(self, protocol: str = "http/protobuf", **extra: str) -> dict[str, str]:
        """OTEL_* variables pointing the bot at this receiver."""
        endpoint = self.grpc_endpoint if protocol == "grpc" else self.http_endpoint
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, **extra}

    # ingest
    def ingest(self, payload: bytes, transport: str) -> trace_service_pb2.ExportTraceServiceResponse:
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(payload)
        received: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes=_attrs(s.attributes),
                            events=tuple(
                                ReceivedEvent(e.name, e.time_unix_nano, _attrs(e.attributes)) for e in s.events
                            ),
                            status_code=s.status.code,
                            scope=ss.scope.name,
                            resource=resource,
                            transport=transport,
                        )
                    )
        with self._cond:
            self._spans.extend(received)
            self._cond.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` holds; AssertionError with what arrived if it never does."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({s.name for s in self._spans})
                    raise AssertionError(f"OTLP receiver: condition not met; got {len(self._spans)} spans {names}")
                self._cond.wait(left)
            return list(self._spans)

    def trace_of(self, call_id: str, timeout: float = 20.0) -> list[ReceivedSpan]:
        """All spans of the trace whose ``call`` span has ``sip.call_id == call_id`` (waits for the root)."""

        def root(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
            for s in spans:
                if s.name == "call" and s.attributes.get("sip.call_id") == call_id:
                    return s
            return None

        spans = self.wait_for(lambda ss: root(ss) is not None, timeout)
        r = root(spans)
        assert r is not None
        return [s for s in spans if s.trace_id == r.trace_id]

    # lifecycle
    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: bytes, ctype: str = "application/x-protobuf") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self._reply(404, b"not found", "text/plain")
                    return
                try:
                    if self.headers.get("Content-Encoding", "") == "gzip":
                        body = gzip.decompress(body)
                    response = receiver.ingest(body, "http")
                except Exception as exc:  # the exporter sees the 400 and logs it
                    self._reply(400, repr(exc).encode(), "text/plain")
                    return
                self._reply(200, response.SerializeToString())

        self._http = ThreadingHTTPServer((self.host, 0), Handler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
        self._http_thread.start()
        if self._grpc_enabled:

            class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
                def Export(self, request: Any, context: Any) -> Any:
                    return receiver.ingest(request.SerializeToString(), "grpc")

            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)  # type: ignore[no-untyped-call]
            self.grpc_port = server.add_insecure_port(f"{self.host}:0")
            server.start()
            self._grpc_server = server

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    """Direct children of ``parent`` in start order."""
    return sorted(
        (s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id),
        key=lambda s: s.start_ns,
    )
