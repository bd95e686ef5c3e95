"""One trace per call: the project's span model, driven by explicit monotonic timestamps.

::

    call                      (root; sip.call_id, sip.from, sip.to, network.peer.*)
    ├── sip.invite            INVITE received -> 200 OK sent (events: 100 Trying, 200 OK, ...)
    ├── sip.<method>          later transactions (bye, reinvite, refer), see ``sip_span``
    ├── rtp.session           media start -> media stop, packet counts at the end
    ├── conversation          Pipecat's own span tree, when its tracing is on (see observer.py)
    └── turn                  caller stopped speaking -> first reply RTP packet sent
        ├── stt               VAD stop -> final transcript
        ├── llm               final transcript -> first LLM token
        ├── tts               first LLM token -> first TTS audio
        └── rtp.send          first TTS audio -> first reply RTP packet sent

Times are seconds on the bot's monotonic clock (``time.monotonic()``, the clock the RTP sender
paces on); one anchor taken at construction turns them into span timestamps, so durations in
Jaeger are exactly the monotonic differences. A turn's spans are written when the turn closes,
with explicit start and end times: nothing is open while audio flows, and a test can drive a
whole call with made-up timestamps. Latency metrics are fed from here too, so tracing being
off (no-op tracer) changes nothing for the budget warnings and histograms.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Coroutine
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ivrbot.logs import get_logger
from ivrbot.metrics import Metrics
from ivrbot.telemetry.budget import STAGES, TOTAL, LatencyBudget
from ivrbot.telemetry.timeline import (
    LLM_FIRST_TOKEN,
    RTP_FIRST_PACKET,
    STAGE_BOUNDS,
    STT_FINAL,
    TTS_FIRST_AUDIO,
    VAD_STOP,
    TurnTimeline,
)

AttrValue = str | bool | int | float

# Child span name for each stage.
STAGE_SPAN_NAMES: dict[str, str] = {
    "vad_to_stt": "stt",
    "stt_to_llm": "llm",
    "llm_to_tts": "tts",
    "tts_to_rtp": "rtp.send",
}


class CallTrace:
    """Spans, latency metrics and budget warnings of one SIP call (keyed by its Call-ID).

    Every method takes ``t`` (monotonic seconds); ``None`` means now. Methods are meant to be
    called from the event loop thread; calls after ``end`` are ignored.
    """

    def __init__(
        self,
        call_id: str,
        *,
        tracer: trace.Tracer | None = None,
        from_uri: str = "",
        to_uri: str = "",
        remote: tuple[str, int] | None = None,
        budget: LatencyBudget | None = None,
        metrics: Metrics | None = None,
        t_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_anchor_ns: int | None = None,
    ) -> None:
        self.call_id = call_id
        self.budget = budget or LatencyBudget()
        self.metrics = metrics
        self._clock = clock
        self._anchor_mono = clock()
        self._anchor_wall_ns = time.time_ns() if wall_anchor_ns is None else wall_anchor_ns
        self._tracer = tracer if tracer is not None else trace.get_tracer("ivrbot")
        self.log = get_logger(__name__).bind(call_id=call_id)
        self.turns_completed = 0
        self._turn: TurnTimeline | None = None
        self._turn_notes: dict[str, AttrValue] = {}
        self._next_turn = 1
        self._early_transcript = False
        self._ended = False
        t0 = self._t(t_start)
        attrs: dict[str, AttrValue] = {"sip.call_id": call_id}
        if from_uri:
            attrs["sip.from"] = from_uri
        if to_uri:
            attrs["sip.to"] = to_uri
        if remote is not None:
            attrs["network.peer.address"] = remote[0]
            attrs["network.peer.port"] = remote[1]
        # A new root: the call is the trace, whatever context the caller happens to run in.
        self._call_span: Span = self._tracer.start_span(
            "call",
            context=otel_context.Context(),
            kind=SpanKind.SERVER,
            attributes=attrs,
            start_time=self._ns(t0),
        )
        self._ctx = trace.set_span_in_context(self._call_span)
        self._invite_span: Span | None = self._tracer.start_span(
            "sip.invite",
            context=self._ctx,
            kind=SpanKind.SERVER,
            attributes={"sip.method": "INVITE", "sip.call_id": call_id},
            start_time=self._ns(t0),
        )
        self._rtp_span: Span | None = None

    # time
    def now(self) -> float:
        return self._clock()

    def _t(self, t: float | None) -> float:
        return self._clock() if t is None else t

    def _ns(self, t: float) -> int:
        return self._anchor_wall_ns + round((t - self._anchor_mono) * 1e9)

    # context for Pipecat and other tracers
    @property
    def otel_context(self) -> otel_context.Context:
        """An OpenTelemetry context whose current span is the call span."""
        return self._ctx

    @property
    def span(self) -> Span:
        return self._call_span

    @property
    def trace_id(self) -> str:
        """Hex trace id (32 digits; all zeros when tracing is off), e.g. for a log line or a Jaeger URL."""
        return format(self._call_span.get_span_context().trace_id, "032x")

    def create_task[T](self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` in a task whose current span is the call span.

        Spans started there without an explicit parent, such as Pipecat's ``conversation`` span
        when the pipeline worker runs in this task, become children of ``call``.
        """
        ctx = contextvars.copy_context()
        ctx.run(otel_context.attach, self._ctx)
        return asyncio.get_running_loop().create_task(coro, name=name, context=ctx)

    # SIP
    def sip_event(self, name: str, t: float | None = None, **attributes: AttrValue) -> None:
        """A moment of INVITE handling (``100 Trying sent``, ``ACK received``...); on the call span later."""
        if self._ended:
            return
        span = self._invite_span or self._call_span
        span.add_event(name, attributes=attributes, timestamp=self._ns(self._t(t)))

    def answered(self, t: float | None = None) -> None:
        """200 OK sent: closes ``sip.invite``."""
        if self._invite_span is None or self._ended:
            return
        ts = self._ns(self._t(t))
        self._invite_span.add_event("200 OK sent", timestamp=ts)
        self._invite_span.set_attribute("sip.status_code", 200)
        self._invite_span.end(end_time=ts)
        self._invite_span = None
        self._call_span.set_attribute("sip.answered", True)

    def rejected(self, status: int, reason: str, t: float | None = None) -> None:
        """Final non-2xx to the INVITE (486, 488, 503, 487 after CANCEL...): ends the whole call."""
        if self._ended:
            return
        if self._invite_span is not None:
            self._invite_span.set_attribute("sip.status_code", status)
            if status >= 500 or status in (400, 403, 488):
                self._invite_span.set_status(Status(StatusCode.ERROR, f"{status} {reason}"))
        self.end(reason, t)

    def sip_span(self, name: str, start: float, end: float, status: int | None = None, **attributes: AttrValue) -> None:
        """A finished SIP transaction under ``call``: ``sip.bye``, ``sip.reinvite``, ``sip.refer``..."""
        if self._ended:
            return
        attrs: dict[str, AttrValue] = {"sip.call_id": self.call_id, **attributes}
        if status is not None:
            attrs["sip.status_code"] = status
        span = self._tracer.start_span(name, context=self._ctx, attributes=attrs, start_time=self._ns(start))
        span.end(end_time=self._ns(end))

    # RTP session
    def rtp_started(
        self, t: float | None = None, *, local_port: int | None = None, remote: tuple[str, int] | None = None
    ) -> None:
        if self._ended or self._rtp_span is not None:
            return
        attrs: dict[str, AttrValue] = {"sip.call_id": self.call_id}
        if local_port is not None:
            attrs["rtp.local_port"] = local_port
        if remote is not None:
            attrs["rtp.remote_address"] = remote[0]
            attrs["rtp.remote_port"] = remote[1]
        self._rtp_span = self._tracer.start_span(
            "rtp.session", context=self._ctx, attributes=attrs, start_time=self._ns(self._t(t))
        )

    def rtp_stopped(self, t: float | None = None, **stats: int) -> None:
        """Media ended; ``stats`` like packets_received=..., packets_lost=... become ``rtp.*`` attributes."""
        if self._rtp_span is None:
            return
        for key, value in stats.items():
            self._rtp_span.set_attribute(f"rtp.{key}", value)
        self._rtp_span.end(end_time=self._ns(self._t(t)))
        self._rtp_span = None

    # turn moments
    @property
    def current_turn(self) -> TurnTimeline | None:
        return self._turn

    def user_started_speaking(self, t: float | None = None) -> None:
        """The caller speaks again: a turn still waiting for its reply is abandoned."""
        if self._turn is not None and not self._turn.complete:
            self._close_turn(self._t(t), interrupted=True)

    def user_stopped_speaking(self, t: float | None = None, *, stop_secs: float | None = None) -> None:
        """VAD says the caller stopped (``stop_secs`` of silence after the last word): a turn opens."""
        if self._ended:
            return
        t = self._t(t)
        if self._turn is not None and not self._turn.complete:
            self._close_turn(t, interrupted=True)
        self._turn = TurnTimeline(self._next_turn)
        self._turn.mark(VAD_STOP, t)
        self._turn_notes = {}
        if stop_secs is not None:
            self._turn_notes["vad.stop_secs"] = stop_secs

    def transcript_final(self, t: float | None = None, *, chars: int | None = None) -> None:
        """A final (non-empty) transcript; one before the VAD stop (ASR endpointing won) is remembered."""
        turn = self._turn
        if turn is None or turn.complete:
            self._early_transcript = True
            return
        if turn.mark(STT_FINAL, self._t(t)) and chars is not None:
            self._turn_notes["stt.chars"] = chars

    def llm_first_token(self, t: float | None = None) -> None:
        turn = self._turn
        if turn is None:
            return
        if not turn.has(STT_FINAL) and self._early_transcript and turn.start is not None:
            # The reply answers a transcript that was final before VAD saw the end: 0 ms of STT wait.
            turn.mark(STT_FINAL, turn.start)
            self._turn_notes["stt.before_vad"] = True
        turn.mark(LLM_FIRST_TOKEN, self._t(t))

    def tts_first_audio(self, t: float | None = None) -> None:
        if self._turn is not None:
            self._turn.mark(TTS_FIRST_AUDIO, self._t(t))

    def bot_started_speaking(self, t: float | None = None) -> None:
        """Pipecat's output transport began writing the reply (informational; RTP marks the end)."""
        turn = self._turn
        if turn is not None and turn.has(TTS_FIRST_AUDIO) and not turn.complete:
            start = turn.start or 0.0
            self._turn_notes.setdefault("bot_started_speaking_ms", round((self._t(t) - start) * 1000.0, 3))

    def mark_first_packet_sent(self, t: float | None = None) -> None:
        """First non-silent RTP packet of a reply left the socket: the turn is complete.

        The RTP sender's talk-spurt hook calls this; packets of a reply with no open turn
        (the greeting, a DTMF prompt) are ignored.
        """
        turn = self._turn
        if turn is None or turn.complete:
            return
        t = self._t(t)
        if turn.mark(RTP_FIRST_PACKET, t):
            self._close_turn(t, interrupted=False)

    def _close_turn(self, t_close: float, *, interrupted: bool) -> None:
        turn = self._turn
        self._turn = None
        self._early_transcript = False
        if turn is None or turn.start is None:
            return
        if not turn.has(STT_FINAL):
            return  # VAD noise without words: no turn to speak of, and its number is reused
        self._next_turn = turn.number + 1
        durations = turn.durations()
        attrs: dict[str, AttrValue] = {
            "sip.call_id": self.call_id,
            "turn.number": turn.number,
            "turn.complete": turn.complete,
            "turn.interrupted": interrupted,
            **self._turn_notes,
        }
        for stage, seconds in durations.items():
            attrs[f"{stage}_ms"] = round(seconds * 1000.0, 3)
        end = turn.moments[RTP_FIRST_PACKET] if turn.complete else max(t_close, *turn.moments.values())
        span = self._tracer.start_span("turn", context=self._ctx, attributes=attrs, start_time=self._ns(turn.start))
        span_ctx = trace.set_span_in_context(span)
        for stage in STAGES:
            begin_m, end_m = STAGE_BOUNDS[stage]
            if stage not in durations:
                continue
            child = self._tracer.start_span(
                STAGE_SPAN_NAMES[stage],
                context=span_ctx,
                attributes={"ivrbot.stage": stage, "duration_ms": attrs[f"{stage}_ms"]},
                start_time=self._ns(turn.moments[begin_m]),
            )
            child.end(end_time=self._ns(turn.moments[end_m]))
        log = self.log.bind(turn=turn.number)
        for over in turn.overruns(self.budget):
            _, end_m = STAGE_BOUNDS[over.stage]
            span.add_event(
                "budget_exceeded",
                attributes={
                    "stage": over.stage,
                    "over_ms": round(over.over_ms, 3),
                    "duration_ms": round(over.duration_s * 1000.0, 3),
                    "budget_ms": round(over.budget_s * 1000.0, 3),
                },
                timestamp=self._ns(turn.moments[end_m]),
            )
            log.warning(
                "latency budget exceeded",
                stage=over.stage,
                over_ms=round(over.over_ms, 1),
                duration_ms=round(over.duration_s * 1000.0, 1),
                budget_ms=round(over.budget_s * 1000.0, 1),
            )
            if self.metrics is not None:
                self.metrics.budget_overrun(over.stage)
        span.end(end_time=self._ns(end))
        if self.metrics is not None:
            for stage in STAGES:
                if stage in durations:
                    self.metrics.observe_stage(stage, durations[stage])
            if TOTAL in durations:
                self.metrics.observe_turn(durations[TOTAL])
        if turn.complete:
            self.turns_completed += 1
        log.info(
            "turn latency" if turn.complete else "turn abandoned",
            **{f"{k}_ms": round(v * 1000.0, 1) for k, v in durations.items()},
        )

    # end of call
    def end(self, reason: str, t: float | None = None, **attributes: AttrValue) -> None:
        """Close everything still open; idempotent."""
        if self._ended:
            return
        t = self._t(t)
        if self._turn is not None and not self._turn.complete:
            self._close_turn(t, interrupted=True)
        self.rtp_stopped(t)
        ts = self._ns(t)
        if self._invite_span is not None:
            self._invite_span.end(end_time=ts)
            self._invite_span = None
        self._call_span.set_attribute("call.end_reason", reason)
        self._call_span.set_attribute("call.turns", self.turns_completed)
        for key, value in attributes.items():
            self._call_span.set_attribute(key, value)
        self._call_span.end(end_time=ts)
        self._ended = True

    @property
    def ended(self) -> bool:
        return self._ended
