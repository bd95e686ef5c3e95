"""SDP offer/answer for the bot's one audio stream (RFC 4566, RFC 3264, RFC 4733).

The bot speaks PCMU/8000 and understands telephone-event/8000. :func:`negotiate` turns an offer
into :class:`MediaParams` (what the media layer needs) or raises :class:`NoCommonCodec` (-> 488);
:func:`build_answer` writes the answer with the configured routable address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

PCMU_PT = 0
DEFAULT_PTIME = 20
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_RTP_PROTOS = ("RTP/AVP", "RTP/AVPF")
# ASCII only: str.isdigit() takes '²' or '٥', which int() then refuses.
_UINT_RE = re.compile(r"[0-9]{1,5}")
_PTIME_RE = re.compile(r"[0-9]{1,5}(?:\.[0-9]{0,3})?")


def _uint(text: str, what: str, limit: int) -> int:
    """A port or payload type: 1-5 ASCII digits up to ``limit``, else SdpError (-> 488)."""
    if _UINT_RE.fullmatch(text) is None or int(text) > limit:
        raise SdpError(f"bad {what} {text[:20]!r}")
    return int(text)


class SdpError(ValueError):
    """The body is not usable SDP."""


class NoCommonCodec(SdpError):
    """The offer has no audio stream with PCMU/8000 over plain RTP: answer 488."""


@dataclass(frozen=True)
class MediaSection:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None
    rtpmap: dict[int, str] = field(default_factory=dict)
    attributes: tuple[str, ...] = ()

    @property
    def m_line(self) -> str:
        return f"m={self.media} {self.port} {self.proto} {' '.join(self.formats)}"


@dataclass(frozen=True)
class SessionDescription:
    origin: str
    connection: str | None
    attributes: tuple[str, ...]
    media: tuple[MediaSection, ...]


@dataclass(frozen=True)
class MediaParams:
    """The negotiated audio stream.

    ``remote_address``/``remote_port``: where to send RTP (address ``0.0.0.0`` means on hold).
    ``direction`` is the answer's direction from the bot's point of view; ``send``/``receive`` say
    whether the bot may send / should expect media.
    """

    remote_address: str
    remote_port: int
    audio_pt: int
    dtmf_pt: int | None
    ptime: int
    offer_direction: str
    direction: str
    audio_index: int
    offer_m_lines: tuple[str, ...]

    @property
    def on_hold(self) -> bool:
        return self.direction in ("recvonly", "inactive") or self.remote_address in ("0.0.0.0", "::")

    @property
    def send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and not self.on_hold

    @property
    def receive(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


@dataclass(frozen=True)
class SdpOffer:
    """An offer as received, parsed, and negotiated against what the bot supports."""

    text: str
    session: SessionDescription
    media: MediaParams


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value[:60]!r}")
    addr = parts[2].split("/")[0]
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        # A host name would need DNS, which has no place on the event loop or in the media path
        # (and a proxy in front always writes an IP): refused, 488.
        raise SdpError(f"c= address is not an IP address: {addr[:60]!r}") from None


@dataclass
class _SectionBuilder:
    media: str
    port: int
    proto: str
    formats: list[str]
    conn: str | None = None
    rtpmap: dict[int, str] = field(default_factory=dict)
    attrs: list[str] = field(default_factory=list)

    def build(self) -> MediaSection:
        return MediaSection(
            self.media, self.port, self.proto, tuple(self.formats), self.conn, dict(self.rtpmap), tuple(self.attrs)
        )


def parse_sdp(text: str) -> SessionDescription:
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP must start with v=")
    if lines[0] != "v=0":
        raise SdpError(f"unsupported SDP version {lines[0][:20]!r}")
    origin = ""
    s_conn: str | None = None
    s_attrs: list[str] = []
    media: list[MediaSection] = []
    cur: _SectionBuilder | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            if cur is not None:
                media.append(cur.build())
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"bad m= line {value[:60]!r}")
            port = _uint(parts[1].split("/")[0], "m= port", 65535)
            cur = _SectionBuilder(parts[0], port, parts[2], parts[3:])
        elif kind == "o" and cur is None:
            origin = value
        elif kind == "c":
            addr = _connection_address(value)
            if cur is None:
                s_conn = addr
            else:
                cur.conn = addr
        elif kind == "a":
            if cur is None:
                s_attrs.append(value)
            else:
                cur.attrs.append(value)
                if value.lower().startswith("rtpmap:"):
                    pt_text, _, enc = value[7:].partition(" ")
                    if enc.strip():
                        cur.rtpmap[_uint(pt_text, "rtpmap payload type", 127)] = enc.strip()
    if cur is not None:
        media.append(cur.build())
    return SessionDescription(origin, s_conn, tuple(s_attrs), tuple(media))


def _attr_value(attrs: tuple[str, ...], name: str) -> str | None:
    prefix = name + ":"
    for a in attrs:
        if a.lower().startswith(prefix):
            return a[len(prefix) :].strip()
    return None


def _direction(attrs: tuple[str, ...]) -> str | None:
    for a in attrs:
        if a.lower() in _DIRECTIONS:
            return a.lower()
    return None


def _encoding(section: MediaSection, pt: int) -> str | None:
    enc = section.rtpmap.get(pt)
    if enc is None:
        return "pcmu/8000" if pt == PCMU_PT else None
    name, _, rest = enc.partition("/")
    rate = rest.split("/")[0]
    return f"{name.lower()}/{rate}"


def negotiate(session: SessionDescription) -> MediaParams:
    """Pick the first audio stream over RTP/AVP that offers PCMU/8000."""
    for index, m in enumerate(session.media):
        if m.media != "audio" or m.port == 0 or m.proto.upper() not in _RTP_PROTOS:
            continue
        pts = [_uint(f, "payload type", 127) for f in m.formats]
        audio = next((pt for pt in pts if _encoding(m, pt) == "pcmu/8000"), None)
        if audio is None:
            continue
        dtmf = next((pt for pt in pts if _encoding(m, pt) == "telephone-event/8000"), None)
        conn = m.connection or session.connection
        if conn is None:
            raise SdpError("no c= line for the audio stream")
        ptime_text = _attr_value(m.attributes, "ptime") or _attr_value(session.attributes, "ptime")
        ptime = DEFAULT_PTIME
        if ptime_text is not None and _PTIME_RE.fullmatch(ptime_text):
            value = round(float(ptime_text))  # at most 5 digits: no overflow, no '1e400'
            if 10 <= value <= 60 and value % 10 == 0:
                ptime = value
        offer_dir = _direction(m.attributes) or _direction(session.attributes) or "sendrecv"
        return MediaParams(
            remote_address=conn,
            remote_port=m.port,
            audio_pt=audio,
            dtmf_pt=dtmf,
            ptime=ptime,
            offer_direction=offer_dir,
            direction=_MIRROR[offer_dir],
            audio_index=index,
            offer_m_lines=tuple(s.m_line for s in session.media),
        )
    raise NoCommonCodec("no audio stream offering PCMU/8000 over RTP/AVP")


def parse_offer(body: bytes | str) -> SdpOffer:
    """Parse and negotiate in one step (SdpError / NoCommonCodec on failure)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    session = parse_sdp(text)
    return SdpOffer(text, session, negotiate(session))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address.lower() == "localhost"


def build_answer(
    params: MediaParams,
    *,
    address: str,
    port: int,
    session_id: int,
    session_version: int,
    username: str = "ivrbot",
    allow_loopback: bool = False,
    hold: bool = False,
) -> str:
    """The answer: PCMU (+ telephone-event if offered) on ``address:port``, other streams refused.

    ``allow_loopback`` must be set explicitly to advertise 127.0.0.1 (local tests only): a
    loopback c= line sent to a real peer means one-way silence that no log would explain.
    ``hold`` makes the bot's answer ``sendonly``/``inactive`` (the bot holding the caller).
    """
    if _is_loopback(address) and not allow_loopback:
        raise ValueError(f"refusing to advertise loopback address {address} in SDP")
    ip_ver = "IP6" if ":" in address else "IP4"
    direction = params.direction
    if hold:
        direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
    lines = [
        "v=0",
        f"o={username} {session_id} {session_version} IN {ip_ver} {address}",
        "s=ivrbot",
        f"c=IN {ip_ver} {address}",
        "t=0 0",
    ]
    for index, m_line in enumerate(params.offer_m_lines):
        if index != params.audio_index:
            media, _, proto_fmts = m_line[2:].partition(" ")
            _, _, rest = proto_fmts.partition(" ")
            lines.append(f"m={media} 0 {rest}")
            continue
        fmts = [str(params.audio_pt)]
        if params.dtmf_pt is not None:
            fmts.append(str(params.dtmf_pt))
        proto = m_line.split()[2]
        lines.append(f"m=audio {port} {proto} {' '.join(fmts)}")
        lines.append(f"a=rtpmap:{params.audio_pt} PCMU/8000")
        if params.dtmf_pt is not None:
            lines.append(f"a=rtpmap:{params.dtmf_pt} telephone-event/8000")
            lines.append(f"a=fmtp:{params.dtmf_pt} 0-16")
        lines.append(f"a=ptime:{params.ptime}")
        lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"
