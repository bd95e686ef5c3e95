"""The caller's call: one SIP dialog and its RTP stream, driven like a phone.

It behaves like a phone behind a proxy: INVITE with an SDP offer (PCMU + telephone-event), ACK,
a continuous 20 ms RTP stream (speech when there is some, PCMU silence otherwise), RFC 4733 key
presses, BYE; it answers the bot's BYE, REFER (202 + NOTIFY 200) and re-INVITE. Everything it
hears is kept with arrival times so latency is measured where the caller is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid

import numpy as np

from ivrbot.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from ivrbot_tools.caller.record import CallRecord, HeardPacket
from ivrbot_tools.caller.wire import (
    RtpParseError,
    SipMessage,
    SipParseError,
    key_press,
    pack_rtp,
    parse_rtp,
    parse_sip,
    request,
    response_to,
    sdp_audio_target,
    tag_of,
    uri_of,
)

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
SILENCE_ULAW = b"\xff" * FRAME_SAMPLES
DTMF_PT = 101


class CallFailed(RuntimeError):
    """The call could not be set up; the message has the final SIP status."""


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=2000)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((data, addr))


class SipCaller:
    """One call to `target`; use `async with SipCaller(...) as call:` then play, press, hang up."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        local_host: str = "127.0.0.1",
        to_user: str = "ivr",
        headers: dict[str, str] | None = None,
        answer_timeout: float = 30.0,
    ) -> None:
        self.target = target
        self.local_host = local_host
        self.to_user = to_user
        self.extra_headers = headers or {}
        self.answer_timeout = answer_timeout
        self.record = CallRecord(call_id=f"{uuid.uuid4().hex}@ivrbot-caller")
        self._from_tag = uuid.uuid4().hex[:10]
        self._to_tag = ""
        self._cseq = 1
        self._remote_target = f"sip:{to_user}@{target[0]}:{target[1]}"
        self._route: list[str] = []
        self._sip = _Udp()
        self._rtp = _Udp()
        self._sip_port = 0
        self._rtp_port = 0
        self._rtp_remote: tuple[str, int] | None = None
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._seq = random.randrange(0, 0xFFFF)
        self._ts = random.randrange(0, 0xFFFFFFFF)
        self._ssrc = random.randrange(1, 0xFFFFFFFF)
        self._tasks: list[asyncio.Task[None]] = []
        self._responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._talking = False
        self._dtmf: asyncio.Queue[str] = asyncio.Queue()
        self._done_markers: list[asyncio.Future[None]] = []
        self._answered_at = 0.0
        self._invite_2xx_ack: bytes | None = None

    # -- set-up and tear-down -------------------------------------------------------------------
    async def __aenter__(self) -> SipCaller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        st, _ = await loop.create_datagram_endpoint(lambda: self._sip, local_addr=(self.local_host, 0))
        rt, _ = await loop.create_datagram_endpoint(lambda: self._rtp, local_addr=(self.local_host, 0))
        self._sip_port = st.get_extra_info("sockname")[1]
        self._rtp_port = rt.get_extra_info("sockname")[1]
        self._tasks.append(asyncio.create_task(self._sip_loop(), name="caller-sip"))
        self._tasks.append(asyncio.create_task(self._rtp_rx_loop(), name="caller-rtp-rx"))
        try:
            await self._invite()
        except BaseException:
            self.ended.set()  # refused or unanswered: nothing to hang up, but sockets and tasks to free
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._rtp_tx_loop(), name="caller-rtp-tx"))

    async def stop(self) -> None:
        if not self.ended.is_set():
            with contextlib.suppress(Exception):
                await self.hangup()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for proto in (self._sip, self._rtp):
            if proto.transport is not None:
                proto.transport.close()

    # -- what a caller does ---------------------------------------------------------------------
    async def play(self, pcm8k: bytes) -> None:
        """Queue speech (s16le, 8 kHz) and wait until its last packet has been sent."""
        frames = pcm_to_ulaw(pcm8k)
        for i in range(0, len(frames), FRAME_SAMPLES):
            chunk = frames[i : i + FRAME_SAMPLES]
            await self._out.put(chunk.ljust(FRAME_SAMPLES, b"\xff"))
        done = asyncio.get_running_loop().create_future()
        await self._out.put(b"")  # marker: resolves when reached
        self._done_markers.append(done)
        await done
        self.record.speech_sent_until = time.monotonic()

    async def press(self, key: str) -> None:
        """An RFC 4733 key press (100 ms), sent in the RTP stream."""
        await self._dtmf.put(key)

    async def wait_audible(self, since: float, timeout: float) -> float | None:
        """Wait until the bot's audio is heard after `since`; returns the arrival time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.record.first_audible_after(since)
            if t is not None:
                return t
            if self.ended.is_set():
                return None
            await asyncio.sleep(0.01)
        return None

    async def wait_quiet(self, seconds: float, timeout: float) -> bool:
        """Wait until the bot has been silent for `seconds` (e.g. after its greeting)."""
        deadline = time.monotonic() + timeout
        rec = self.record
        while time.monotonic() < deadline:
            now = time.monotonic()
            last_loud = rec.audible[-1] if rec.audible else self._answered_at
            flowing = bool(rec.heard) and rec.heard[-1].arrival >= now - seconds
            if flowing and now - max(last_loud, self._answered_at) >= seconds:
                return True
            await asyncio.sleep(0.05)
        return False

    async def hangup(self) -> None:
        if self.ended.is_set():
            return
        await self._request("BYE")
        self.ended.set()

    # -- SIP ------------------------------------------------------------------------------------
    def _send_sip(self, data: bytes) -> None:
        assert self._sip.transport is not None
        self._sip.transport.sendto(data, self.target)

    def _base_headers(self, method: str, cseq: int, branch: str) -> list[tuple[str, str]]:
        to = f"<sip:{self.to_user}@{self.target[0]}:{self.target[1]}>"
        if self._to_tag:
            to += f";tag={self._to_tag}"
        h = [
            ("Via", f"SIP/2.0/UDP {self.local_host}:{self._sip_port};branch=z9hG4bK{branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:caller@{self.local_host}:{self._sip_port}>;tag={self._from_tag}"),
            ("To", to),
            ("Call-ID", self.record.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:caller@{self.local_host}:{self._sip_port}>"),
            ("User-Agent", "ivrbot-caller"),
        ]
        h += [("Route", r) for r in self._route]
        return h

    def _offer(self) -> bytes:
        ip = self.local_host
        return (
            f"v=0\r\no=caller 1 1 IN IP4 {ip}\r\ns=call\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {self._rtp_port} RTP/AVP 0 {DTMF_PT}\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:{DTMF_PT} telephone-event/8000\r\na=fmtp:{DTMF_PT} 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        ).encode()

    def _build(
        self,
        method: str,
        cseq: int,
        branch: str,
        body: bytes = b"",
        uri: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> SipMessage:
        headers = self._base_headers(method, cseq, branch) + (extra or [])
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return request(method, uri or self._remote_target, headers, body)

    async def _invite(self) -> None:
        branch = uuid.uuid4().hex[:16]
        extra = list(self.extra_headers.items())
        invite = self._build(
            "INVITE",
            self._cseq,
            branch,
            self._offer(),
            uri=f"sip:{self.to_user}@{self.target[0]}:{self.target[1]}",
            extra=extra,
        )
        data = invite.to_bytes()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.answer_timeout
        interval = 0.5
        provisional = False
        self._send_sip(data)
        next_tx = loop.time() + interval
        while True:
            timeout = min(deadline, next_tx if not provisional else deadline) - loop.time()
            if timeout <= 0:
                if loop.time() >= deadline:
                    raise CallFailed("no final answer to INVITE")
                self._send_sip(data)
                interval = min(interval * 2, 4.0)
                next_tx = loop.time() + interval
                continue
            try:
                resp = await asyncio.wait_for(self._responses.get(), timeout)
            except TimeoutError:
                continue
            if resp.header("CSeq") is None or "INVITE" not in (resp.header("CSeq") or ""):
                continue
            self.record.status = resp.status
            if resp.status < 200:
                provisional = True
                continue
            self._to_tag = tag_of(resp.header("To") or "") or self._to_tag
            if resp.status >= 300:
                self._send_sip(self._ack_for(resp, branch))
                self.ended.set()
                raise CallFailed(f"call refused: {resp.status} {resp.reason}")
            self._route = list(reversed(resp.header_all("Record-Route")))
            contact = resp.header("Contact")
            if contact:
                self._remote_target = uri_of(contact)
            self._rtp_remote = sdp_audio_target(resp.body, self.target[0])
            self._answered_at = time.monotonic()
            self._send_sip(self._ack_for(resp, branch))
            self._invite_2xx_ack = self._ack_for(resp, branch)
            return

    def _ack_for(self, resp: SipMessage, invite_branch: str) -> bytes:
        if resp.status >= 300:  # ACK for a failure is part of the INVITE transaction: same branch
            ack = self._build(
                "ACK", self._cseq, invite_branch, uri=f"sip:{self.to_user}@{self.target[0]}:{self.target[1]}"
            )
        else:
            ack = self._build("ACK", self._cseq, uuid.uuid4().hex[:16])
        return ack.to_bytes()

    async def _request(self, method: str) -> SipMessage | None:
        self._cseq += 1
        req = self._build(method, self._cseq, uuid.uuid4().hex[:16]).to_bytes()
        for attempt in range(7):
            self._send_sip(req)
            try:
                async with asyncio.timeout(0.5 * 2 ** min(attempt, 3)):
                    while True:
                        resp = await self._responses.get()
                        if (resp.header("CSeq") or "").startswith(f"{self._cseq} ") and resp.status >= 200:
                            return resp
            except TimeoutError:
                continue
        return None

    def _respond(
        self, req: SipMessage, status: int, reason: str, extra: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        if body:
            extra = [*(extra or []), ("Content-Type", "application/sdp")]
        self._send_sip(response_to(req, status, reason, extra, body).to_bytes())

    async def _sip_loop(self) -> None:
        while True:
            data, _ = await self._sip.queue.get()
            try:
                msg = parse_sip(data)
            except SipParseError:
                continue
            if msg.is_response:
                if msg.status >= 200 and "INVITE" in (msg.header("CSeq") or "") and self._to_tag and self.record.status:
                    # a retransmitted 200 OK: our ACK was lost
                    if self._invite_2xx_ack:
                        self._send_sip(self._invite_2xx_ack)
                await self._responses.put(msg)
                continue
            self.record.requests_from_bot.append(msg.method)
            contact = f"<sip:caller@{self.local_host}:{self._sip_port}>"
            if msg.method == "BYE":
                self._respond(msg, 200, "OK")
                self.record.bye_from_bot = True
                self.ended.set()
            elif msg.method == "REFER":
                refer_to = msg.header("Refer-To") or ""
                self.record.refer_to = refer_to.strip("<> ")
                self._respond(msg, 202, "Accepted", [("Contact", contact)])
                asyncio.get_running_loop().call_soon(self._notify_transfer_done)
            elif msg.method == "INVITE":
                self._respond(msg, 200, "OK", [("Contact", contact)], self._offer())
            elif msg.method in ("OPTIONS", "INFO", "NOTIFY", "UPDATE"):
                self._respond(msg, 200, "OK")
            elif msg.method == "ACK":
                pass
            else:
                self._respond(msg, 405, "Method Not Allowed")

    def _notify_transfer_done(self) -> None:
        self._cseq += 1
        extra = [
            ("Event", "refer"),
            ("Subscription-State", "terminated;reason=noresource"),
            ("Content-Type", "message/sipfrag;version=2.0"),
        ]
        req = self._build("NOTIFY", self._cseq, uuid.uuid4().hex[:16], extra=extra)
        req.body = b"SIP/2.0 200 OK\r\n"
        self._send_sip(req.to_bytes())

    # -- RTP ------------------------------------------------------------------------------------
    def _send_rtp(self, pt: int, payload: bytes, marker: bool, ts: int) -> None:
        if self._rtp.transport is None or self._rtp_remote is None:
            return
        packet = pack_rtp(pt, self._seq, ts, self._ssrc, payload, marker)
        self._seq = (self._seq + 1) & 0xFFFF
        self._rtp.transport.sendto(packet, self._rtp_remote)

    async def _rtp_tx_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            next_t += 0.02
            if not self._dtmf.empty():
                key = self._dtmf.get_nowait()
                ts = self._ts
                for marker, payload in key_press(key, packets=5, samples_per_packet=FRAME_SAMPLES):
                    self._send_rtp(DTMF_PT, payload, marker=marker, ts=ts)
                    next_t = max(next_t, loop.time()) + 0.02
                    await asyncio.sleep(max(0.0, next_t - loop.time()))
                self._ts = (self._ts + 800 + 160) & 0xFFFFFFFF
                continue
            payload = SILENCE_ULAW
            talking = False
            while not self._out.empty():
                item = self._out.get_nowait()
                if item == b"":
                    fut = self._done_markers.pop(0)
                    if not fut.done():
                        fut.set_result(None)
                    continue
                payload, talking = item, True
                break
            self._send_rtp(0, payload, marker=talking and not self._talking, ts=self._ts)
            self._talking = talking
            self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
            await asyncio.sleep(max(0.0, next_t - loop.time()))

    async def _rtp_rx_loop(self) -> None:
        while True:
            data, _ = await self._rtp.queue.get()
            now = time.monotonic()
            try:
                pkt = parse_rtp(data)
            except RtpParseError:
                continue
            level = 0.0
            if pkt.payload_type == 0:
                pcm = ulaw_to_pcm(pkt.payload)
                level = float(np.abs(np.frombuffer(pcm, dtype=np.int16)).mean()) if pcm else 0.0
                self.record.pcm += pcm
            self.record.add(HeardPacket(now, pkt.sequence, pkt.timestamp, pkt.payload_type, pkt.marker, level))
