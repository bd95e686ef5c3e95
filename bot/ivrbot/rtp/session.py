"""One call's RTP stream over UDP: the asyncio shell around the sans-IO codec, jitter buffer and packetizer.

One clock task (absolute deadlines from ``loop.time()``) sends exactly one packet every ``ptime``
(speech if queued, else comfort silence; 20 ms unless the SDP asked otherwise) and plays out exactly
one 20 ms frame every 20 ms. With the default ptime both fall on the same wake-up. Received packets
of any size are re-framed into 20 ms frames, so a peer sending 30 ms packets plays out correctly.

Latching: only datagrams from the negotiated remote address are accepted; others are counted as
``foreign_source`` and ignored. With ``latch_to_source=True`` (symmetric RTP for a peer behind NAT
whose SDP address is unreachable) the first valid RTP packet with a negotiated payload type,
arriving before anything came from the SDP address, re-latches both directions to its source.
It is off by default: OpenSIPS deployments normally anchor media with rtpengine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ivrbot.audio.concealment import Concealer
from ivrbot.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from ivrbot.logs import get_logger
from ivrbot.rtp.dtmf import DtmfDecoder
from ivrbot.rtp.jitter import JitterBuffer, PlayoutKind
from ivrbot.rtp.packet import RtpParseError, parse_rtp
from ivrbot.rtp.ports import PortLease
from ivrbot.rtp.sender import PCMU_PAYLOAD_TYPE, SAMPLES_PER_PACKET, Pacer, RtpPacketizer

FRAME_BYTES = SAMPLES_PER_PACKET * 2  # one 20 ms s16le frame at 8 kHz
PLAYOUT_INTERVAL = 0.020
_EARLY = 0.0005  # a wake-up this close to a deadline counts as on time
_SILENT_FRAME = bytes(FRAME_BYTES)

Address = tuple[str, int]


class MediaDirection(StrEnum):
    """The bot's own direction, as in its SDP answer."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (MediaDirection.SENDRECV, MediaDirection.SENDONLY)


@dataclass(frozen=True, slots=True)
class RtpCounters:
    """Snapshot of one session's counters (``RtpSession.counters``)."""

    received: int
    lost: int
    late: int
    duplicate: int
    malformed: int
    foreign_source: int
    unknown_payload_type: int
    sent: int
    dtmf_events: int
    frames_dropped: int
    underruns: int
    resyncs: int
    rtcp_received: int


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None], on_error: Callable[[Exception], None]) -> None:
        self._on_datagram = on_datagram
        self._on_error = on_error

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._on_error(exc)


class RtpSession:
    """Owns the lease's sockets and the clock task; ``stop()`` closes them and returns the ports."""

    def __init__(
        self,
        lease: PortLease,
        remote: Address | None,
        *,
        call_id: str = "",
        audio_payload_type: int = PCMU_PAYLOAD_TYPE,
        dtmf_payload_type: int | None = 101,
        direction: MediaDirection = MediaDirection.SENDRECV,
        jitter_depth: int = 3,
        adaptive_jitter: bool = True,
        latch_to_source: bool = False,
        conceal: bool = True,
        ptime_ms: int = 20,
        frame_queue_size: int = 50,
        send_queue_ms: int = 100,
    ) -> None:
        if not 10 <= ptime_ms <= 120 or ptime_ms % 10:
            raise ValueError(f"ptime must be 10-120 ms in 10 ms steps, not {ptime_ms}")
        self.lease = lease
        self.call_id = call_id
        self.audio_payload_type = audio_payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.direction = direction
        self.latch_to_source = latch_to_source
        self.conceal = conceal
        self._remote = remote
        self._log = get_logger(__name__).bind(call_id=call_id, rtp_port=lease.rtp_port)
        self._jitter = JitterBuffer(depth=jitter_depth, adaptive=adaptive_jitter)
        self._dtmf = DtmfDecoder()
        self._concealer = Concealer(FRAME_BYTES)
        self.ptime_ms = ptime_ms
        self._samples_per_packet = 8 * ptime_ms
        self.packetizer = RtpPacketizer(audio_payload_type, samples_per_packet=self._samples_per_packet)
        self._fifo = bytearray()  # decoded s16le audio not yet played out as a 20 ms frame
        self._frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=frame_queue_size)
        self._dtmf_keys: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._send_q: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(maxsize=max(2, send_queue_ms // ptime_ms))
        self._pending = bytearray()  # mu-law bytes short of a full packet
        self._pending_ticks = 0
        self._generation = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._stopped = False
        self._heard_remote = False
        self._first_packet_seen = False
        self._malformed_logged = False
        # Listeners, registered by each owner with listen(); none replaces another's.
        self._first_packet_listeners: list[Callable[[], None]] = []
        self._spurt_listeners: list[Callable[[int], None]] = []
        self._error_listeners: list[Callable[[Exception], None]] = []
        self.pacer_reanchors = 0
        self._c = dict.fromkeys(
            ("malformed", "foreign_source", "unknown_payload_type", "sent", "dtmf_events", "frames_dropped", "rtcp"),
            0,
        )

    def listen(
        self,
        *,
        first_packet: Callable[[], None] | None = None,
        spurt_sent: Callable[[int], None] | None = None,
        error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Add listeners: ``first_packet()`` when the first valid RTP packet arrived; ``spurt_sent(seq)``
        right after the first packet of a talk spurt was handed to the socket (latency timing);
        ``error(exc)`` on a socket error or a media clock failure. They run on the event loop, in
        the order they were added, and must not block."""
        if first_packet is not None:
            self._first_packet_listeners.append(first_packet)
        if spurt_sent is not None:
            self._spurt_listeners.append(spurt_sent)
        if error is not None:
            self._error_listeners.append(error)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self.lease.rtp_port

    @property
    def remote(self) -> Address | None:
        return self._remote

    async def start(self) -> None:
        """Idempotent (the transport's input and output both call it)."""
        async with self._start_lock:
            if self._task is not None:
                return
            if self._stopped:
                raise RuntimeError("RtpSession cannot be restarted")
            await self._open()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._on_datagram, self._on_socket_error), sock=self.lease.rtp_sock
        )
        self._rtcp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._on_rtcp, self._on_socket_error), sock=self.lease.rtcp_sock
        )
        self._task = asyncio.create_task(self._clock(), name=f"rtp-clock-{self.lease.rtp_port}")
        self._log.info("rtp.started", remote=self._remote, direction=str(self.direction))

    async def stop(self) -> None:
        """Idempotent; safe if ``start()`` never ran. Returns the ports to the pool."""
        if self._stopped:
            return
        self._stopped = True
        self.clear()  # unblocks a writer waiting for queue space
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for t in (self._transport, self._rtcp_transport):
            if t is not None:
                t.close()
        self._transport = self._rtcp_transport = None
        self.lease.release()
        self._log.info("rtp.stopped", **dataclasses.asdict(self.counters))

    def update_remote(self, remote: Address | None, direction: MediaDirection) -> None:
        """Apply a re-INVITE: new peer address and/or hold (not sending) while keeping the socket."""
        if remote != self._remote:
            self._heard_remote = False
        self._remote = remote
        self.direction = direction
        self._log.info("rtp.remote_updated", remote=remote, direction=str(direction))

    # -- receive ---------------------------------------------------------------------------

    async def read_frame(self) -> bytes:
        """Next 20 ms of caller audio, s16le 8 kHz mono (320 bytes), one per tick once audio started."""
        return await self._frames.get()

    async def read_dtmf(self) -> str:
        """Next key press ("0"-"9", "*", "#", "A"-"D"), once per press."""
        return await self._dtmf_keys.get()

    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        self._c["rtcp"] += 1

    def _on_socket_error(self, exc: Exception) -> None:
        self._log.warning("rtp.socket_error", error=str(exc))
        for listener in self._error_listeners:
            listener(exc)

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        if self._stopped:
            return
        source: Address = (addr[0], addr[1])
        from_remote = source == self._remote
        if not from_remote and not (self.latch_to_source and not self._heard_remote):
            self._c["foreign_source"] += 1
            return
        try:
            pkt = parse_rtp(data)
        except RtpParseError as exc:
            self._c["malformed"] += 1
            if not self._malformed_logged:
                self._malformed_logged = True
                self._log.warning("rtp.malformed", error=str(exc), source=source)
            return
        pt = pkt.payload_type
        if pt != self.audio_payload_type and pt != self.dtmf_payload_type:
            self._c["unknown_payload_type"] += 1
            return
        if not from_remote:
            self._log.info("rtp.relatched", old=self._remote, new=source)
            self._remote = source
        self._heard_remote = True
        if pt == self.audio_payload_type:
            self._jitter.push(
                pkt.ssrc, pkt.sequence, pkt.timestamp, pkt.payload, samples=len(pkt.payload), arrival=time.monotonic()
            )
        else:
            key = self._dtmf.feed(pkt.ssrc, pkt.timestamp, pkt.payload)
            if key is not None:
                self._c["dtmf_events"] += 1
                with contextlib.suppress(asyncio.QueueFull):
                    self._dtmf_keys.put_nowait(key)
        if not self._first_packet_seen:
            self._first_packet_seen = True
            for listener in self._first_packet_listeners:
                listener()

    def _playout(self) -> None:
        if not self._jitter.started:
            return
        while len(self._fifo) < FRAME_BYTES:
            p = self._jitter.pop()
            if p.kind is PlayoutKind.AUDIO:
                self._fifo += self._concealer.good(ulaw_to_pcm(p.payload))
            elif p.kind is PlayoutKind.LOST:
                self._fifo += self._concealer.lost() if self.conceal else self._concealer.silence()
            else:  # nothing to play: the rest of this frame is silence
                self._concealer.silence()
                self._fifo += bytes(FRAME_BYTES - len(self._fifo))
        frame = bytes(self._fifo[:FRAME_BYTES])
        del self._fifo[:FRAME_BYTES]
        if self._frames.full():
            self._frames.get_nowait()
            self._c["frames_dropped"] += 1
        self._frames.put_nowait(frame)

    # -- send ------------------------------------------------------------------------------

    async def write_pcm(self, pcm: bytes) -> None:
        """Queue s16le 8 kHz speech; waits while ~100 ms is already queued (back-pressure)."""
        if self._stopped:
            return
        gen = self._generation
        self._pending += pcm_to_ulaw(pcm)
        self._pending_ticks = 0
        n = self._samples_per_packet
        while len(self._pending) >= n:
            chunk = bytes(self._pending[:n])
            del self._pending[:n]
            await self._send_q.put((gen, chunk))
            if gen != self._generation:
                return

    def clear(self) -> None:
        """Drop all queued speech (interruption): the next packet sent is silence."""
        self._generation += 1
        self._pending.clear()
        while not self._send_q.empty():
            self._send_q.get_nowait()

    @property
    def queued_packets(self) -> int:
        return self._send_q.qsize()

    def _next_payload(self) -> bytes | None:
        while not self._send_q.empty():
            gen, chunk = self._send_q.get_nowait()
            if gen == self._generation:
                return chunk
        if self._pending:
            # A reply's tail shorter than a packet: send it padded once the writer has gone quiet.
            self._pending_ticks += 1
            if self._pending_ticks >= 2:
                chunk = bytes(self._pending).ljust(self._samples_per_packet, b"\xff")
                self._pending.clear()
                return chunk
        return None

    def _send(self) -> None:
        payload = self._next_payload()
        remote = self._remote
        if not self.direction.sends or remote is None or self._transport is None:
            self.packetizer.skip()
            return
        if payload is None:
            data = self.packetizer.silence()
            seq = -1
        else:
            seq = self.packetizer.sequence
            starting = not self.packetizer.in_spurt
            data = self.packetizer.audio(payload)
            if not starting:
                seq = -1
        self._transport.sendto(data, remote)
        self._c["sent"] += 1
        if seq >= 0:
            for listener in self._spurt_listeners:
                listener(seq)

    # -- clock -----------------------------------------------------------------------------

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        send_pacer = Pacer(start, self.ptime_ms / 1000)
        play_pacer = Pacer(start, PLAYOUT_INTERVAL)
        next_send = next_play = start
        try:
            while True:
                delay = min(next_send, next_play) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = loop.time()
                if now >= next_send - _EARLY:
                    self._send()
                    next_send = send_pacer.next_deadline(now)
                if now >= next_play - _EARLY:
                    self._playout()
                    next_play = play_pacer.next_deadline(now)
                self.pacer_reanchors = send_pacer.reanchors + play_pacer.reanchors
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not take the event loop down silently
            self._log.exception("rtp.clock_failed")
            for listener in self._error_listeners:
                listener(exc)

    @property
    def counters(self) -> RtpCounters:
        j = self._jitter.stats
        return RtpCounters(
            received=j.received,
            lost=j.lost,
            late=j.late,
            duplicate=j.duplicate,
            malformed=self._c["malformed"] + self._dtmf.malformed,
            foreign_source=self._c["foreign_source"],
            unknown_payload_type=self._c["unknown_payload_type"],
            sent=self._c["sent"],
            dtmf_events=self._c["dtmf_events"],
            frames_dropped=self._c["frames_dropped"],
            underruns=j.underruns,
            resyncs=j.resyncs,
            rtcp_received=self._c["rtcp"],
        )
