"""OpenSIPSTransport: a Pipecat 1.14 transport over one call's ``RtpSession``.

Input: the 20 ms frames the jitter buffer plays out are joined into ``input_frame_ms`` chunks (40 ms
by default), resampled 8 kHz -> the pipeline's input rate (16 kHz for Vosk and Silero) by a
resampler that answers every chunk (~2 ms delay), and pushed as ``InputAudioRawFrame``. Every frame
costs the same routing through each processor of the pipeline whatever its length, so 40 ms halves
that per-call cost for 20 ms more delay on the first chunk of speech; RFC 4733 key presses become
``InputDTMFFrame``. The wire stays at 20 ms packets.

Output: set ``PipelineParams(audio_out_sample_rate=...)`` to the TTS rate (22050 for Piper) so
Pipecat's own (buffering) resampler stays out of the path; each 20 ms chunk is resampled to 8 kHz
here and handed to the session's paced sender, whose bounded queue (~100 ms) is the back-pressure
that paces the pipeline. An interruption empties that queue: the caller hears silence from the
next packet on.

Events (handler arguments after the transport), the four lifecycle hooks the user named:
``on_rtp_started(call_id)`` when the first valid RTP packet arrives; ``on_participant_joined(call_id,
participant)`` and ``on_participant_left(call_id, reason)`` when the call manager says so (ACK
received / call ended); ``on_error(call_id, error)`` on socket or media-clock failures. The moment a
reply's first packet is sent is not an event here: it is timed by a session listener, synchronously
right after ``sendto()``, where a task hop would blur it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from ivrbot.audio.resample import StreamResampler
from ivrbot.logs import get_logger
from ivrbot.rtp.session import RtpSession

RTP_SAMPLE_RATE = 8000
#: the transport's events; the call manager listens to all four
TRANSPORT_EVENTS = ("on_rtp_started", "on_participant_joined", "on_participant_left", "on_error")
#: default length of the audio frames pushed into the pipeline (a multiple of the 20 ms playout frame)
INPUT_FRAME_MS = 40
_PLAYOUT_FRAME_MS = 20


def telephony_params(**overrides: Any) -> TransportParams:
    """TransportParams for a phone call: audio both ways, 20 ms output chunks, short end silence."""
    values: dict[str, Any] = {
        "audio_in_enabled": True,
        "audio_out_enabled": True,
        "audio_out_10ms_chunks": 2,
        "audio_out_end_silence_secs": 1,
    }
    values.update(overrides)
    return TransportParams(**values)


class OpenSIPSInputTransport(BaseInputTransport):
    """Caller audio and DTMF from the RTP session into the pipeline."""

    def __init__(self, transport: OpenSIPSTransport, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._owner = transport
        self._session = transport.session
        self._resampler: StreamResampler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._frames_per_push = transport.input_frame_ms // _PLAYOUT_FRAME_MS

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._session.start()
        if self.sample_rate != RTP_SAMPLE_RATE:
            self._resampler = StreamResampler(RTP_SAMPLE_RATE, self.sample_rate)
        await self.set_transport_ready(frame)
        if not self._tasks:
            self._tasks = [
                self.create_task(self._audio_reader(), "rtp_audio_reader"),
                self.create_task(self._dtmf_reader(), "rtp_dtmf_reader"),
            ]

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._stop_tasks()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_tasks()

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await self.cancel_task(task)

    async def _audio_reader(self) -> None:
        read, n = self._session.read_frame, self._frames_per_push
        while True:
            pcm = await read()
            if n > 1:
                pcm += b"".join([await read() for _ in range(n - 1)])
            rate = RTP_SAMPLE_RATE
            if self._resampler is not None:
                pcm = self._resampler.process(pcm)
                rate = self._resampler.out_rate
            if pcm:
                await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1))

    async def _dtmf_reader(self) -> None:
        while True:
            key = await self._session.read_dtmf()
            try:
                button = KeypadEntry(key)
            except ValueError:
                # A-D have no KeypadEntry and no menu meaning: not passed on
                continue
            await self.push_frame(InputDTMFFrame(button=button))


class OpenSIPSOutputTransport(BaseOutputTransport):
    """Pipeline audio out through the session's paced PCMU sender."""

    def __init__(self, transport: OpenSIPSTransport, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._owner = transport
        self._session = transport.session
        self._resamplers: dict[int, StreamResampler] = {}

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._session.start()
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._session.stop()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._session.stop()

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._session.stop()
        await self._owner.cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._session.clear()
            for r in self._resamplers.values():
                r.reset()

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        pcm = frame.audio
        if frame.num_channels != 1:
            return False
        if frame.sample_rate != RTP_SAMPLE_RATE:
            r = self._resamplers.get(frame.sample_rate)
            if r is None:
                r = self._resamplers[frame.sample_rate] = StreamResampler(frame.sample_rate, RTP_SAMPLE_RATE)
            pcm = r.process(pcm)
        await self._session.write_pcm(pcm)
        return True


class OpenSIPSTransport(BaseTransport):
    """One call's media as a Pipecat transport; the call manager drives the participant events."""

    def __init__(
        self,
        session: RtpSession,
        call_id: str,
        params: TransportParams | None = None,
        *,
        name: str | None = None,
        input_frame_ms: int = INPUT_FRAME_MS,
    ) -> None:
        super().__init__(name=name or f"OpenSIPSTransport[{call_id}]")
        if input_frame_ms < _PLAYOUT_FRAME_MS or input_frame_ms % _PLAYOUT_FRAME_MS:
            raise ValueError(f"input_frame_ms must be a multiple of {_PLAYOUT_FRAME_MS}, not {input_frame_ms}")
        self.session = session
        self.call_id = call_id
        self.input_frame_ms = input_frame_ms
        self._params = params or telephony_params()
        self._log = get_logger(__name__).bind(call_id=call_id)
        self._input: OpenSIPSInputTransport | None = None
        self._output: OpenSIPSOutputTransport | None = None
        self._pending: set[asyncio.Task[None]] = set()
        for event in TRANSPORT_EVENTS:
            self._register_event_handler(event)
        session.listen(first_packet=self._rtp_started, error=self._media_error)

    def input(self) -> OpenSIPSInputTransport:
        if self._input is None:
            self._input = OpenSIPSInputTransport(self, self._params, name=self._input_name)
        return self._input

    def output(self) -> OpenSIPSOutputTransport:
        if self._output is None:
            self._output = OpenSIPSOutputTransport(self, self._params, name=self._output_name)
        return self._output

    async def participant_joined(self, participant: dict[str, Any] | None = None) -> None:
        """Call when the dialog is confirmed (ACK for the 200 OK)."""
        self._log.info("transport.participant_joined")
        await self._call_event_handler("on_participant_joined", self.call_id, participant or {})

    async def participant_left(self, reason: str) -> None:
        """Call when the call ends, whatever ended it (BYE, CANCEL, timeout, bot hang-up)."""
        self._log.info("transport.participant_left", reason=reason)
        await self._call_event_handler("on_participant_left", self.call_id, reason)

    async def report_error(self, error: str) -> None:
        self._log.warning("transport.error", error=error)
        await self._call_event_handler("on_error", self.call_id, error)

    async def cleanup(self) -> None:
        """Cancel event dispatches still pending from session hooks, then wait for running handlers."""
        pending, self._pending = set(self._pending), set()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await super().cleanup()  # type: ignore[no-untyped-call]

    def _fire(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _rtp_started(self) -> None:
        self._log.info("transport.rtp_started", remote=self.session.remote)
        self._fire(self._call_event_handler("on_rtp_started", self.call_id))

    def _media_error(self, exc: Exception) -> None:
        self._fire(self.report_error(f"{type(exc).__name__}: {exc}"))
