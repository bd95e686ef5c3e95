"""The caller's own SIP, SDP, RTP and RFC 4733 wire code.

The caller is a test oracle for the bot: it shares none of the bot's SIP, SDP or RTP code, so a
mistake there cannot hide itself by being made on both ends. It is a UAC that builds INVITE, ACK,
BYE and NOTIFY, answers the few requests a bot sends, and reads what it needs from responses; it
is lenient where a phone would be (unknown headers, compact forms, folded lists) and checks no more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

#: RFC 3261 7.3.3 compact forms of the headers the caller reads
_COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "m": "contact", "l": "content-length",
            "c": "content-type", "r": "refer-to"}
#: headers whose comma-separated items the caller needs one by one
_LISTS = frozenset({"record-route", "via"})


class SipParseError(ValueError):
    """Not a SIP message the caller can read."""


@dataclass
class SipMessage:
    """A request (`method` set) or a response (`status` set); header names kept as written."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.status > 0

    def header_all(self, name: str) -> list[str]:
        want = name.lower()
        out: list[str] = []
        for key, value in self.headers:
            low = key.lower()
            if _COMPACT.get(low, low) != want:
                continue
            out.extend(_split_list(value) if want in _LISTS else [value])
        return out

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def to_bytes(self) -> bytes:
        start = f"SIP/2.0 {self.status} {self.reason}" if self.is_response else f"{self.method} {self.uri} SIP/2.0"
        lines = [start, *(f"{k}: {v}" for k, v in self.headers if k.lower() not in ("content-length", "l"))]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def _split_list(value: str) -> list[str]:
    """Split a header list on commas outside <...> and quotes."""
    items: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0 and not quoted:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur).strip())
    return [i for i in items if i]


def parse_sip(data: bytes) -> SipMessage:
    """One UDP datagram -> a SipMessage; SipParseError for anything without a SIP start line."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no end of headers")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not UTF-8") from exc
    msg = SipMessage()
    parts = lines[0].split(" ", 2)
    if parts[0] == "SIP/2.0" and len(parts) >= 2 and parts[1].isdigit():
        msg.status, msg.reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
    elif len(parts) == 3 and parts[2] == "SIP/2.0":
        msg.method, msg.uri = parts[0], parts[1]
    else:
        raise SipParseError(f"not a SIP start line: {lines[0][:60]!r}")
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and msg.headers:  # folded continuation
            k, v = msg.headers[-1]
            msg.headers[-1] = (k, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:60]!r}")
        msg.headers.append((name.strip(), value.strip()))
    length = msg.header("Content-Length")
    msg.body = body[: int(length)] if length and length.isdigit() else body
    return msg


def request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"") -> SipMessage:
    return SipMessage(method=method, uri=uri, headers=list(headers), body=body)


def response_to(req: SipMessage, status: int, reason: str, extra: list[tuple[str, str]] | None = None,
                body: bytes = b"") -> SipMessage:
    """A response copying Via, From, To, Call-ID and CSeq from `req` (RFC 3261 8.2.6.2)."""
    copied = [(k, v) for k, v in req.headers
              if _COMPACT.get(k.lower(), k.lower()) in ("via", "from", "to", "call-id", "cseq")]
    return SipMessage(status=status, reason=reason, headers=copied + list(extra or []), body=body)


def tag_of(name_addr: str) -> str:
    """The tag parameter of a From/To value ("" when there is none)."""
    for param in name_addr.rpartition(">")[2].split(";")[1:] if ">" in name_addr else name_addr.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "tag":
            return value.strip()
    return ""


def uri_of(name_addr: str) -> str:
    """The URI inside <...> of a Contact or Route value (the value itself when there are no brackets)."""
    if "<" in name_addr:
        return name_addr.split("<", 1)[1].split(">", 1)[0]
    return name_addr.split(";", 1)[0].strip()


def sdp_audio_target(sdp: bytes, default_host: str) -> tuple[str, int]:
    """Where the answerer wants audio: the first accepted m=audio port and its c= (or the session's c=)."""
    session_host, section, found = default_host, "session", None
    for raw in sdp.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if found is not None:
                break
            fields = line[2:].split()
            section = "other"
            if len(fields) > 1 and fields[0] == "audio" and fields[1].isdigit() and int(fields[1]) > 0:
                section, found = "audio", (session_host, int(fields[1]))
        elif line.startswith("c=") and section != "other":
            host = line[2:].split()[-1].split("/")[0]
            if section == "session":
                session_host = host
            elif found is not None:
                found = (host, found[1])
    if found is None:
        raise SipParseError("the SDP answer has no accepted audio stream")
    return found


# -- RTP (RFC 3550) and telephone-events (RFC 4733) ---------------------------------------------
_RTP_HEADER = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    """Not an RTP packet."""


@dataclass(frozen=True)
class Rtp:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def pack_rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return _RTP_HEADER.pack(0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def parse_rtp(data: bytes) -> Rtp:
    """The fields the caller records; CSRCs, a header extension and padding are skipped."""
    if len(data) < _RTP_HEADER.size:
        raise RtpParseError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = _RTP_HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpParseError("not RTP version 2")
    start, end = _RTP_HEADER.size + 4 * (b0 & 0x0F), len(data)
    if b0 & 0x10:
        if start + 4 > end:
            raise RtpParseError("header extension runs past the packet")
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    if b0 & 0x20:
        end -= data[-1]
    if start > end:
        raise RtpParseError("header runs past the payload")
    return Rtp(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), data[start:end])


DTMF_EVENTS = "0123456789*#ABCD"


def key_press(key: str, packets: int = 5, samples_per_packet: int = 160) -> list[tuple[bool, bytes]]:
    """(marker, payload) of one RFC 4733 key press as a phone sends it: updates, then three end packets."""
    if len(key) != 1 or key.upper() not in DTMF_EVENTS:
        raise ValueError(f"not a DTMF key: {key!r}")
    event, volume = DTMF_EVENTS.index(key.upper()), 10

    def payload(duration: int, end: bool) -> bytes:
        return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)

    out = [(i == 0, payload((i + 1) * samples_per_packet, False)) for i in range(packets)]
    out += [(False, payload(packets * samples_per_packet, True))] * 3
    return out
