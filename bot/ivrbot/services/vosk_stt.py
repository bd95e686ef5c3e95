"""Vosk speech-to-text over the alphacep vosk-server WebSocket protocol, one session per call.

Only speech is sent (``SpeechGate``): while the caller is silent the last ``preroll_ms`` of audio
wait in a ring and nothing goes to the server; ``VADUserStartedSpeakingFrame`` sends that ring (the
onset the VAD needed time to confirm: it reaches this service ``start_secs`` plus Silero's window
after the first syllable), then audio goes out in ``batch_ms`` messages until the VAD's stop. So
the server decodes speech time, not call time, and never has a backlog of silence to work through
before it can answer a finalize.

Kaldi's own endpointing waits 0.5-2 s of silence before it sends a final result; the bot's VAD
already knows the caller stopped, so on ``VADUserStoppedSpeakingFrame`` the service sends
``{"reset" : 1}`` and uses the final that answers it (marked finalized, which also ends Pipecat's
STT TTFB measurement: VAD stop -> final transcript). The server answers every message with exactly
one JSON message, in order, so a FIFO of what was sent tells which final answers the reset.

A pause inside the turn (``UserPausedFrame``: the VAD has heard ``pause_secs`` of silence and is
still waiting out its stop) is finalized the same way, without closing the speech gate: the final
is pushed marked ``PAUSE_FINAL`` and the server goes on with a fresh decoder. Audio sent during the
pause is silence by the VAD's judgement, so partials answering it are not pushed (a stray word from
line noise would tell the turn strategy more text is coming). If the caller resumes, that audio is
decoded as a new segment and its final follows as a second transcription of the same turn (the user
aggregator joins them in order); if not, the finalize at the VAD's stop answers a segment of only
that silence, which pushes nothing, not even a word Vosk makes of line noise (counted in
``hush_words_dropped``): the turn already ended on the pause's final at the stop, and a word now
would start a turn of its own and cut the reply off.

Speech that comes before the call's first connection is up (a caller who talks at once, a bot whose
event loop is busy setting the call up) is held and sent, in order, as soon as it is: the first
syllables of a call are never dropped for being early. Up to ``EARLY_MAX_S`` of it; a first
connection that fails drops it (counted) like any audio during an outage.

A server that is down or drops the session never fails the call: audio is dropped (and counted)
while disconnected, the service reconnects with a capped backoff for as long as the call lasts,
and each outage is reported once as a non-permanent ``ErrorFrame`` (category CONNECTIVITY).

A server that stops answering (paused, swapped out, wedged) is caught while a finalize waits. A
slow server is not a stall: under load the Korean model decodes slower than real time and one
100 ms message can take 1-2 s, so silence on the data path proves nothing, and a ping on it is no
better (the server stops reading the socket while 16 messages wait, so the ping waits behind
them). A fresh connection does prove it: the server's event loop accepts the WebSocket handshake
while its decoder threads work, and a paused process cannot. So when nothing has come for half of
``stall_timeout`` the service opens a probe connection, and one not accepted within
``stall_timeout`` is a stall: the utterance is reported lost (an ``ErrorFrame``, so the caller
hears the apology), the session is dropped with everything still unanswered on it (a late
transcript would answer a question asked long ago), and the service reconnects as after an
outage; connecting is bounded by ``open_timeout`` so a paused server is retried, not waited on.

``ttfs_p99_latency`` (announced to the turn strategy) is only the safety net for a final that never
comes: the finalized answer to the reset ends the wait at once, so it is set generously (1.5 s) to
keep a slow, loaded Vosk from splitting one question into two turns.

Longer than the project's ~450-line norm on purpose: it is one Pipecat service whose connection,
speech gate, early-audio hold, finalize FIFO and stall probe all act on the same session (the gate
itself is already its own module); split across modules they would share that state through
attributes of another object, not through less code.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, Literal

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import WebsocketSTTService
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt
from websockets.asyncio.client import connect as websocket_connect
from websockets.protocol import State

from ivrbot.logs import get_logger
from ivrbot.pause_signal import UserPausedFrame, UserResumedFrame
from ivrbot.services.speech_gate import SpeechGate

#: exact strings: vosk-server compares these byte for byte
VOSK_RESET = '{"reset" : 1}'
VOSK_EOF = '{"eof" : 1}'

#: what each message sent was: speech, audio during a signalled pause, a finalize at the VAD's stop,
#: at a pause, or at a pause the caller has since resumed after (the server answers each with one
#: message, in order)
_Sent = Literal["audio", "hush", "reset", "reset-hush", "pause", "pause-resumed"]
_RESETS = ("reset", "reset-hush", "pause", "pause-resumed")

#: key in a TranscriptionFrame's ``result``: true when the final answers a finalize at a pause, not
#: at the VAD's stop (preemptive replies start on it)
PAUSE_FINAL = "ivrbot_pause_final"

#: audio kept while the caller is silent and sent when the VAD starts; covers the VAD's start lag
#: (start_secs 0.15 s + Silero's 32 ms window + the frame's trip back upstream; see docs/media.md)
PREROLL_MS = 400
#: silence sent when a session opens, so the recognizer's set-up is not paid by the first question
WARMUP_MS = 1000
#: speech held while the call's first connection is still being made
EARLY_MAX_S = 10


class VoskSTTService(WebsocketSTTService):
    """Streams 16 kHz s16le audio to vosk-server; partials are interim, finals are transcriptions."""

    def __init__(
        self,
        *,
        url: str,
        sample_rate: int = 16000,
        preroll_ms: int = PREROLL_MS,
        batch_ms: int = 100,
        call_id: str = "",
        reconnect_min_wait: float = 0.25,
        reconnect_max_wait: float = 2.0,
        stall_timeout: float = 1.0,
        open_timeout: float = 2.0,
        ttfs_p99_latency: float = 1.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            ttfs_p99_latency=ttfs_p99_latency,
            settings=STTSettings(model=None, language=None),
            reconnect_on_error=False,
            **kwargs,
        )
        if stall_timeout <= 0 or open_timeout <= 0:
            raise ValueError("stall_timeout and open_timeout must be > 0")
        self._url = url
        self._preroll_ms = preroll_ms
        self._batch_ms = batch_ms
        self._gate = SpeechGate(0, 2)  # sized in start(), when the pipeline's rate is known
        self._sent: deque[_Sent] = deque()
        self._resets: deque[float] = deque()  # send times of unanswered resets, oldest first
        self._run_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        #: the call's first connection is still being made: speech waits in ``_early`` instead of dropping
        self._first_pending = True
        self._early = bytearray()
        self._min_wait = reconnect_min_wait
        self._max_wait = reconnect_max_wait
        self._stall_timeout = stall_timeout
        self._open_timeout = open_timeout
        self._stalled = False
        self._last_rx = 0.0  # loop time of the latest message from the server
        self._paused = False  # a pause was finalized and the caller has not resumed: audio sent is "hush"
        self._log = get_logger(__name__).bind(call_id=call_id, service="vosk")
        self.dropped_audio_bytes = 0
        self.sent_audio_bytes = 0
        self.reconnects = 0
        self.outages = 0
        self.stalls = 0
        #: finals Vosk made of audio the VAD called silence (after a pause, up to the stop): dropped
        self.hush_words_dropped = 0

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """For callers that want the session up before sending audio (tests, warm-up)."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # lifecycle -------------------------------------------------------------------------------

    @property
    def gate(self) -> SpeechGate:
        return self._gate

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        per_ms = self.sample_rate * 2 // 1000
        self._gate = SpeechGate(self._preroll_ms * per_ms, max(2, self._batch_ms * per_ms))
        await self._connect()

    async def stop(self, frame: EndFrame) -> None:
        # The server closes the session after answering eof: that close is not an outage.
        self._disconnecting = True
        await self._send_eof()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[no-untyped-call]
        if self._run_task is None:
            self._run_task = self.create_task(self._run(), name="vosk_session")

    async def _disconnect(self) -> None:
        await super()._disconnect()  # type: ignore[no-untyped-call]
        for task in (self._run_task, self._watchdog):
            if task is not None:
                await self.cancel_task(task)
        self._run_task = self._watchdog = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        self._websocket = await self._websocket_connect(self._url, max_size=2**22, open_timeout=self._open_timeout)
        await self._websocket.send(json.dumps({"config": {"sample_rate": self.sample_rate, "words": 0}}))
        # A new recognizer pays a one-time cost in its first half second of audio (its creation, then
        # 1-3 s of decoder set-up at the 0.5 s mark, measured here under load): 1 s of silence now
        # pays it at connect time, not on the caller's first question. The project's vosk-server
        # hands out recognizers that already paid it (then this costs 0.02-0.13 s); an upstream one
        # does not, and a caller who speaks at once then waits behind it.
        await self._websocket.send(bytes(self.sample_rate * 2 * WARMUP_MS // 1000))
        # A new recognizer session: nothing is outstanding on it, and half an utterance sent to the
        # old one would only make the next final wrong.
        self._sent.clear()
        self._sent.append("audio")
        self._resets.clear()
        if self._gate.speaking and not self._first_pending:
            self._gate.stop()

    async def _send_early(self) -> None:
        """Speech that came before the first connection: sent now, ahead of anything later."""
        ws = self._websocket
        while self._early and ws is not None:
            data = bytes(self._early)
            self._early.clear()
            self._sent.append("audio")
            await ws.send(data)
            self.sent_audio_bytes += len(data)
        self._first_pending = False

    async def _disconnect_websocket(self) -> None:
        self._connected.clear()
        ws, self._websocket = self._websocket, None
        if ws is not None:
            try:
                await ws.close()
            except Exception as exc:  # a dead socket cannot be closed politely; nothing to recover
                self._log.debug("vosk close failed", error=str(exc))

    async def _run(self) -> None:
        """Connect, receive until the session ends, and reconnect, for the whole call."""
        attempt = 0
        reported = False
        while not self._disconnecting:
            try:
                await self._connect_websocket()
                await self._send_early()
            except Exception as exc:
                attempt += 1
                if self._first_pending:  # what was held for the first connection is lost with it
                    self._first_pending = False
                    self.dropped_audio_bytes += len(self._early)
                    self._early.clear()
                if not reported:
                    reported = True
                    self.outages += 1
                    await self._report_outage(f"cannot connect to vosk-server at {self._url}: {exc}", exc)
                await asyncio.sleep(min(self._max_wait, self._min_wait * 2 ** min(attempt, 6)))
                continue
            if attempt or reported:
                self.reconnects += 1
                self._log.info("vosk reconnected", attempts=attempt)
            attempt = 0
            reported = False
            self._connected.set()
            await self._call_event_handler("on_connected")
            try:
                await self._receive_messages()
                reason = "vosk-server closed the session"
                error: Exception | None = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"vosk-server session failed: {exc}"
                error = exc
            self._connected.clear()
            self._websocket = None
            if self._disconnecting:
                return
            reported = True
            await self._call_event_handler("on_disconnected")
            if self._stalled:
                self._stalled = False  # reported when it was detected
            else:
                self.outages += 1
                await self._report_outage(reason, error)
            await asyncio.sleep(self._min_wait)

    async def _report_outage(self, message: str, exc: Exception | None) -> None:
        self._log.warning("stt unavailable", reason=message)
        await self.push_error(error_msg=message, exception=exc, category=ErrorCategory.CONNECTIVITY)

    # audio and VAD -----------------------------------------------------------------------------

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        batch = self._gate.feed(audio)
        if batch:
            await self._send_audio(batch)
        yield None

    async def _send_audio(self, data: bytes) -> None:
        ws = self._websocket
        if ws is None or ws.state is not State.OPEN or not self._connected.is_set():
            room = self.sample_rate * 2 * EARLY_MAX_S - len(self._early)
            if self._first_pending and len(data) <= room:
                self._early += data
            else:
                self.dropped_audio_bytes += len(data)
            return
        # Recorded before the send: its answer may be received while the send still waits to drain.
        self._sent.append("hush" if self._paused else "audio")
        try:
            await ws.send(data)
        except Exception as exc:
            self.dropped_audio_bytes += len(data)
            self._log.debug("vosk send failed", error=str(exc))
            return
        self.sent_audio_bytes += len(data)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.finalize()
        elif isinstance(frame, UserPausedFrame):
            await self._finalize_pause()
        elif isinstance(frame, UserResumedFrame):
            self._resumed()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._resumed()
            preroll = self._gate.start()
            if preroll:
                await self._send_audio(preroll)
            await self.start_processing_metrics()

    async def finalize(self) -> None:
        """Ask for the final result now instead of waiting for Kaldi's endpointing."""
        if self._first_pending:  # an utterance over before the first connection: it is held, wait for it
            await self.wait_connected(self._open_timeout)
        rest = self._gate.stop()
        ws = self._websocket
        if ws is None or not self._connected.is_set():
            self.dropped_audio_bytes += len(rest)
            # The caller finished an utterance nobody heard: say so (the assistant apologises).
            await self.push_error(
                error_msg=f"vosk-server at {self._url} unavailable: utterance lost",
                category=ErrorCategory.CONNECTIVITY,
            )
            return
        if rest:
            await self._send_audio(rest)
        hush = self._paused  # paused and not resumed: this segment is the pause's silence alone
        self._paused = False
        await self._send_reset(ws, "reset-hush" if hush else "reset")

    async def _finalize_pause(self) -> None:
        """The caller paused mid-turn: the final of what was said so far, while the gate stays open."""
        ws = self._websocket
        if not self._gate.speaking or self._first_pending or ws is None or not self._connected.is_set():
            return  # nothing of this utterance on a session: the finalize at the stop covers it
        rest = self._gate.flush()
        if rest:
            await self._send_audio(rest)
        await self._send_reset(ws, "pause")
        self._paused = True

    def _resumed(self) -> None:
        """The caller speaks again: a pause final still to come no longer ends the turn's transcript."""
        self._paused = False
        if "pause" in self._sent:
            self._sent = deque("pause-resumed" if k == "pause" else k for k in self._sent)

    async def _send_reset(self, ws: Any, kind: _Sent) -> None:
        # Messages the server has not answered yet: its backlog, which this final waits behind.
        self._log.info("stt finalize", at=kind, unanswered=len(self._sent), sent_kb=self.sent_audio_bytes // 1024)
        self._sent.append(kind)
        self._resets.append(asyncio.get_running_loop().time())
        # Before the send: on a busy loop the answer can be received and handled before send()
        # returns, and a final handled before this is not marked finalized (the turn then waits out
        # the STT safety timeout). A failed send leaves it set until the next VAD start clears it.
        self.request_finalize()  # type: ignore[no-untyped-call]
        try:
            await ws.send(VOSK_RESET)
        except Exception as exc:
            self._log.debug("vosk reset failed", error=str(exc))
            return
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = self.create_task(self._watch_resets(ws), name="vosk_finalize_watchdog")

    async def _watch_resets(self, ws: Any) -> None:
        """While a reset is unanswered on ``ws``: a server quiet for half of ``stall_timeout`` is
        probed with a new connection, and one that does not accept it within ``stall_timeout`` has
        stalled."""
        loop = asyncio.get_running_loop()
        while self._resets and self._websocket is ws:
            quiet_since = max(self._resets[0], self._last_rx)
            wait = quiet_since + self._stall_timeout / 2 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not await self._server_alive():
                if self._resets and self._websocket is ws:
                    await self._stall(ws, waited=loop.time() - quiet_since)
                return
            self._last_rx = max(self._last_rx, loop.time())  # alive, only slow: another round

    async def _server_alive(self) -> bool:
        """Whether the server completes a WebSocket handshake within ``stall_timeout``."""
        try:
            probe = await websocket_connect(self._url, open_timeout=self._stall_timeout, close_timeout=0.1)
        except TimeoutError:
            return False
        except Exception:
            return False  # refused or reset: not answering either
        transport = getattr(probe, "transport", None)
        if transport is not None:
            transport.abort()  # no audio was sent: nothing to close politely
        return True

    async def _stall(self, ws: Any, waited: float) -> None:
        """The server stopped answering with a finalize outstanding: the utterance is lost, the session abandoned."""
        self.stalls += 1
        self._stalled = True
        outstanding = len(self._sent)
        # Whatever the server answers on this session from now on is stale: it goes with the session.
        self._sent.clear()
        self._resets.clear()
        self._connected.clear()
        self._finalize_pending = False
        self._log.warning(
            "stt stalled", silent_s=round(waited, 2), timeout_s=self._stall_timeout, unanswered=outstanding
        )
        await self.stop_processing_metrics()
        await self.push_error(
            error_msg=f"vosk-server at {self._url} stalled (accepts no connection): utterance lost",
            category=ErrorCategory.CONNECTIVITY,
        )
        # A paused server cannot take part in a closing handshake: drop the TCP connection; the
        # session loop sees it end and reconnects (bounded by open_timeout per attempt).
        transport = getattr(ws, "transport", None)
        if transport is not None:
            transport.abort()

    async def _send_eof(self) -> None:
        ws = self._websocket
        if ws is not None and self._connected.is_set():
            try:
                await ws.send(VOSK_EOF)
            except Exception as exc:
                self._log.debug("vosk eof failed", error=str(exc))

    # results ---------------------------------------------------------------------------------

    async def _receive_messages(self) -> None:
        ws = self._websocket
        if ws is None:
            return
        async for message in ws:
            if isinstance(message, bytes):
                continue
            await self._handle_message(message)

    async def _handle_message(self, message: str) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            self._log.warning("vosk sent a message that is not JSON", size=len(message))
            return
        self._last_rx = asyncio.get_running_loop().time()
        if not self._sent:
            return  # nothing outstanding: an answer to a session given up on (stale), or unsolicited
        answered = self._sent.popleft()
        finalized = answered in _RESETS
        if finalized and self._resets:
            self._resets.popleft()
        if not isinstance(data, dict):
            return
        if "partial" in data:
            text = str(data.get("partial") or "").strip()
            if text and answered != "hush":
                await self.push_frame(InterimTranscriptionFrame(text, self._user_id, time_now_iso8601(), result=data))
            return
        if "text" not in data:
            return
        text = str(data.get("text") or "").strip()
        if text and answered == "reset-hush":
            self.hush_words_dropped += 1
            self._log.info("stt final of the pause's silence dropped", text=text)
            text = ""
        if finalized and answered != "pause-resumed":  # that one is followed by the resumed speech's final
            self.confirm_finalize()  # type: ignore[no-untyped-call]
        if text:
            await self.stop_processing_metrics()
            result = {**data, PAUSE_FINAL: answered == "pause"}
            await self.push_frame(TranscriptionFrame(text, self._user_id, time_now_iso8601(), result=result))
            await self._handle_transcription(text, True)
        elif answered != "pause-resumed" and finalized:
            # An empty final (silence, or a click the VAD took for speech): nothing to finalize.
            self._finalize_pending = False
            await self.stop_processing_metrics()

    @traced_stt
    async def _handle_transcription(self, transcript: str, is_final: bool, language: str | None = None) -> None:
        """Span hook for tracing: the decorator records the transcript and TTFB."""
