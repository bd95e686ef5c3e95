"""Test helpers: SIP requests as a peer (proxy or phone) would send them, and a fake-clock harness."""

from __future__ import annotations

from dataclasses import dataclass, field

from ivrbot.sip.events import Event
from ivrbot.sip.message import SipRequest, SipResponse, parse_message
from ivrbot.sip.transaction import SipTimers
from ivrbot.sip.useragent import UaConfig, UserAgent

PEER = ("10.0.0.5", 5060)

OFFER = (
    "v=0\r\n"
    "o=alice 1 1 IN IP4 10.0.0.9\r\n"
    "s=-\r\n"
    "c=IN IP4 10.0.0.9\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

ANSWER = (
    "v=0\r\no=ivrbot 1 1 IN IP4 192.0.2.10\r\ns=ivrbot\r\nc=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\n"
)


def request(
    method: str,
    *,
    call_id: str = "call-1",
    cseq: int = 1,
    branch: str = "z9hG4bKb1",
    from_tag: str = "ftag",
    to_tag: str | None = None,
    body: str = "",
    extra: list[str] | None = None,
    uri: str = "sip:bot@192.0.2.10:5060",
    via_host: str = "10.0.0.5:5060",
    content_type: str | None = None,
    cseq_method: str | None = None,
) -> bytes:
    to = "<sip:bot@192.0.2.10>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host};branch={branch}",
        "Max-Forwards: 70",
        f"From: \"Alice\" <sip:alice@10.0.0.9>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@10.0.0.9:5070>",
    ]
    lines += extra or []
    if body:
        lines.append(f"Content-Type: {content_type or 'application/sdp'}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@dataclass
class Harness:
    """A UserAgent with a fake clock; collects what it sends and emits."""

    ua: UserAgent = field(
        default_factory=lambda: UserAgent(UaConfig("192.0.2.10", 5060, timers=SipTimers()))
    )
    now: float = 1000.0
    sent: list[tuple[SipRequest | SipResponse, tuple[str, int]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def feed(self, data: bytes, addr: tuple[str, int] = PEER) -> list[SipRequest | SipResponse]:
        self.ua.feed(data, addr, self.now)
        return self._collect()

    def advance(self, seconds: float, step: float = 0.05) -> list[SipRequest | SipResponse]:
        out: list[SipRequest | SipResponse] = []
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(min(end, self.now + step), 6)
            self.ua.tick(self.now)
            out += self._collect()
        return out

    def _collect(self) -> list[SipRequest | SipResponse]:
        msgs = []
        for data, addr in self.ua.take_datagrams():
            msg = parse_message(data)
            self.sent.append((msg, addr))
            msgs.append(msg)
        self.events += self.ua.take_events()
        return msgs


def statuses(msgs: list[SipRequest | SipResponse]) -> list[int]:
    return [m.status for m in msgs if isinstance(m, SipResponse)]
