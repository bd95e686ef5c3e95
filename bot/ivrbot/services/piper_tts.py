"""Piper text-to-speech over the project's Piper WebSocket server (DESIGN section 5).

Protocol: the server greets with ``{"type":"ready","sample_rate":N}``; the client sends
``{"type":"speak","id","text","flush"}`` and ``{"type":"cancel","id"}``; the server answers each
speak with ``{"type":"audio_start","id"}``, binary s16le mono frames, ``{"type":"audio_end","id",
"reason"}``. Binary frames carry no id, so they belong to the last ``audio_start``.

Pipecat aggregates the LLM's streamed text into sentences; every sentence is its own audio context
and its own Piper id (``reuse_context_id_within_turn=False``), sent as soon as the sentence is
complete, so the first sentence plays while the LLM is still writing the rest. Each aggregated
sentence passes ``speech_transform`` first (``speech_text.py``: no emoji, no markdown), so Piper
reads only words and punctuation; a sentence left with nothing to say is not sent. On interruption
Pipecat drops the queued contexts; this service sends ``cancel`` for each, and audio still arriving
for a cancelled id is dropped (counted in ``dropped_audio_bytes``).

Piper being down never fails the call: the sentence completes without audio, the outage is
reported once as a non-permanent error (the assistant plays its pre-rendered apology), and the next
sentence tries to connect again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EagerEndOfTurnCancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import WebsocketTTSService
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.tracing.service_decorators import traced_tts
from websockets.protocol import State

from ivrbot.assistant_settings import AssistantSettings
from ivrbot.logs import get_logger
from ivrbot.services.first_clause import FirstClauseAggregator
from ivrbot.services.speech_text import speech_transform


#: 20 ms of 16-bit mono audio at the given rate
def _chunk_bytes(sample_rate: int, ms: int = 20) -> int:
    return int(sample_rate * ms / 1000) * 2


class PiperTTSService(WebsocketTTSService):
    """Sentence-by-sentence synthesis with per-sentence cancel; audio at Piper's rate (22.05 kHz)."""

    def __init__(
        self,
        *,
        url: str,
        sample_rate: int = 22050,
        call_id: str = "",
        connect_timeout: float = 2.0,
        first_chunk_secs: float = AssistantSettings.tts_first_chunk_secs,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            settings=TTSSettings(model=None, voice=None, language=None),
            push_start_frame=True,
            push_stop_frames=True,
            push_text_frames=True,
            reuse_context_id_within_turn=False,
            max_consecutive_zero_audio_contexts=0,
            reconnect_on_error=False,
            text_transforms=[("*", speech_transform)],
            **kwargs,
        )
        # Replace Pipecat's sentence aggregator (1.14 has no parameter for it) so the first words of a
        # reply are spoken without waiting for the end of the first sentence.
        self._text_aggregator = FirstClauseAggregator(
            aggregation_type=self._text_aggregation_mode,
            language=self._text_aggregator.language,
            first_chunk_secs=first_chunk_secs,
        )
        self._url = url
        self._connect_timeout = connect_timeout
        self._server_rate = sample_rate
        self._playing_id: str | None = None
        self._cancelled: set[str] = set()
        self._receive_task: Any = None
        self._outage_reported = False
        self._log = get_logger(__name__).bind(call_id=call_id, service="piper")
        self.dropped_audio_bytes = 0
        self.cancels_sent = 0
        self.outages = 0

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return self._websocket is not None and self._websocket.state is State.OPEN

    # lifecycle -------------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._connect()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._disconnect()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._disconnect()

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[no-untyped-call]
        try:
            await self._connect_websocket()
        except Exception as exc:
            await self._report_outage(f"cannot connect to piper server at {self._url}: {exc}", exc)
            return
        if self._receive_task is None:
            self._receive_task = self.create_task(self._receive_loop(), name="piper_receive")

    async def _disconnect(self) -> None:
        await super()._disconnect()  # type: ignore[no-untyped-call]
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        if self.connected:
            return
        ws = await self._websocket_connect(self._url, open_timeout=self._connect_timeout, max_size=2**24)
        ready = json.loads(await ws.recv())
        if not isinstance(ready, dict) or ready.get("type") != "ready":
            await ws.close()
            raise ConnectionError(f"piper server did not announce itself: {ready!r}")
        self._server_rate = int(ready.get("sample_rate") or self.sample_rate)
        if self._server_rate != self.sample_rate:
            self._log.warning("piper rate differs; resampling", server=self._server_rate, ours=self.sample_rate)
        self._websocket = ws
        self._playing_id = None
        if self._outage_reported:
            self._log.info("piper reconnected")
        self._outage_reported = False
        await self._call_event_handler("on_connected")

    async def _disconnect_websocket(self) -> None:
        ws, self._websocket = self._websocket, None
        if ws is not None:
            try:
                await ws.close()
            except Exception as exc:  # closing a dead socket; nothing left to save
                self._log.debug("piper close failed", error=str(exc))
            await self._call_event_handler("on_disconnected")

    async def _report_outage(self, message: str, exc: Exception | None, *, every_time: bool = False) -> None:
        """Log an outage once; ``every_time`` also reports each sentence lost to it (the caller hears why)."""
        if self._outage_reported:
            if every_time:
                await self.push_error(error_msg=message, exception=exc, category=ErrorCategory.CONNECTIVITY)
            return
        self._outage_reported = True
        self.outages += 1
        self._log.warning("tts unavailable", reason=message)
        await self.push_error(error_msg=message, exception=exc, category=ErrorCategory.CONNECTIVITY)

    # receiving -------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        try:
            await self._receive_messages()
            reason, error = "piper server closed the connection", None
        except Exception as exc:
            reason, error = f"piper connection failed: {exc}", exc
        self._receive_task = None
        if self._disconnecting:
            return
        self._websocket = None
        # Audio still due on the lost connection never arrives: end those contexts now.
        await self._close_connection_contexts()  # type: ignore[no-untyped-call]
        await self._report_outage(reason, error)

    async def _receive_messages(self) -> None:
        ws = self._websocket
        if ws is None:
            return
        async for message in ws:
            if isinstance(message, bytes):
                await self._handle_audio(message)
            else:
                await self._handle_event(message)

    async def _handle_audio(self, audio: bytes) -> None:
        ctx = self._playing_id
        if ctx is None or ctx in self._cancelled or not self.audio_context_available(ctx):
            self.dropped_audio_bytes += len(audio)
            return
        if self._server_rate != self.sample_rate:
            audio = await self._resampler.resample(audio, self._server_rate, self.sample_rate)
        if audio:
            await self.append_to_audio_context(
                ctx, TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=ctx)
            )

    async def _handle_event(self, message: str) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            self._log.warning("piper sent a message that is not JSON", size=len(message))
            return
        if not isinstance(event, dict):
            return
        kind, ctx = event.get("type"), event.get("id")
        if kind == "audio_start" and isinstance(ctx, str):
            self._playing_id = ctx
        elif kind == "audio_end" and isinstance(ctx, str):
            if self._playing_id == ctx:
                self._playing_id = None
            self._cancelled.discard(ctx)
            if self.audio_context_available(ctx):
                await self.remove_audio_context(ctx)
        elif kind == "error":
            self._log.warning("piper error", detail=event.get("message"), id=ctx)
            if isinstance(ctx, str) and self.audio_context_available(ctx):
                await self.remove_audio_context(ctx)

    # sending ---------------------------------------------------------------------------------

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        if not self.connected:
            await self._connect()
        ws = self._websocket
        if ws is None:
            # Down: this sentence ends without audio, and the caller is told (apology).
            await self._report_outage(f"piper server at {self._url} unavailable", None, every_time=True)
            yield TTSStoppedFrame(context_id=context_id)
            await self.remove_audio_context(context_id)
            return
        try:
            await ws.send(json.dumps({"type": "speak", "id": context_id, "text": text, "flush": True}))
            await self.start_tts_usage_metrics(text)
        except Exception as exc:
            await self._report_outage(f"piper send failed: {exc}", exc)
            yield TTSStoppedFrame(context_id=context_id)
            await self.remove_audio_context(context_id)
            return
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, EagerEndOfTurnCancelFrame):
            # A preemptive reply was withdrawn (services/preemptive.py): whatever this service is
            # synthesizing or still has queued belongs to it; drop it as on a barge-in.
            await self._start_interruption()  # type: ignore[no-untyped-call]
            await self._handle_interruption(InterruptionFrame(), direction)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Cancel the utterance on the server too, so Piper stops spending CPU on it."""
        self._cancelled.add(context_id)
        ws = self._websocket
        if ws is not None and ws.state is State.OPEN:
            try:
                await ws.send(json.dumps({"type": "cancel", "id": context_id}))
                self.cancels_sent += 1
            except Exception as exc:
                self._log.debug("piper cancel failed", error=str(exc))
        await super().on_audio_context_interrupted(context_id)

    # pre-rendered audio ----------------------------------------------------------------------

    async def play_audio(self, audio: bytes, sample_rate: int) -> None:
        """Push pre-rendered audio straight to the output (the apology: works with Piper down)."""
        step = _chunk_bytes(sample_rate)
        for i in range(0, len(audio), step):
            await self.push_frame(OutputAudioRawFrame(audio[i : i + step], sample_rate, 1))
