"""SIP message parsing and serialisation (RFC 3261 section 7 and 20), for UDP datagrams.

Parsing is lenient where RFC 3261 allows variation (header-name case, compact forms, folded
lines, list values split over several headers or joined by commas, leading CRLFs) and strict where
a wrong guess would corrupt a dialog (start line, Content-Length). Errors raise
:class:`SipParseError`, which carries whatever was parsed so that a 400 can still be answered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Call-ID",
        "Contact",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Event",
        "Expires",
        "From",
        "Max-Forwards",
        "Proxy-Require",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Require",
        "Retry-After",
        "Route",
        "Server",
        "Subscription-State",
        "Supported",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "WWW-Authenticate",
    )
}
_CANONICAL.update({v.lower(): v for v in COMPACT_FORMS.values()})

#: Headers whose value is a comma-separated list (RFC 3261 7.3.1): split into one entry per item.
LIST_HEADERS = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
    }
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+\Z")
_STATUS_RE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?$", re.IGNORECASE)
_DIGITS_RE = re.compile(r"[0-9]+")


class SipParseError(ValueError):
    """A message (or one of its values) that does not follow RFC 3261.

    ``status`` is the response a request deserves (400, or 505 for a foreign SIP version);
    ``partial`` holds the start line and headers parsed before the error, if any.
    """

    def __init__(self, reason: str, *, status: int = 400, partial: SipMessage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial


def canonical_name(name: str) -> str:
    low = name.lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, name)


class Headers:
    """Ordered, case-insensitive multi-map of header fields with canonical (long-form) names."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def get(self, name: str) -> str | None:
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of ``name`` by one value at the first occurrence's place."""
        key = canonical_name(name).lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() == key:
                if not placed:
                    out.append((canonical_name(name), value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((canonical_name(name), value))
        self._items = out

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


@dataclass
class SipMessage:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_all(self, name: str) -> list[str]:
        return self.headers.get_all(name)

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with one line per header value and a Content-Length that matches the body."""
        lines = [self._start_line()]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class SipRequest(SipMessage):
    method: str = ""
    uri: str = ""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass
class SipResponse(SipMessage):
    status: int = 0
    reason: str = ""

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


def split_quoted(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets (commas in display names stay)."""
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    in_angle = False
    escaped = False
    for ch in value:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if in_quote and ch == "\\":
            buf.append(ch)
            escaped = True
            continue
        if ch == '"' and not in_angle:
            in_quote = not in_quote
        elif ch == "<" and not in_quote:
            in_angle = True
        elif ch == ">" and not in_quote:
            in_angle = False
        elif ch == sep and not in_quote and not in_angle:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if in_quote:
        raise SipParseError("unterminated quoted string")
    parts.append("".join(buf))
    return parts


def split_list_value(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and <> (``Via: a, b`` -> two values)."""
    return [p.strip() for p in split_quoted(value, ",") if p.strip()]


def is_keepalive(data: bytes) -> bool:
    """A datagram of only CR/LF (RFC 5626 keepalive) carries no message."""
    return not data.strip(b"\r\n")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    sep = data.find(b"\r\n\r\n")
    if sep >= 0:
        return data[:sep], data[sep + 4 :]
    sep = data.find(b"\n\n")
    if sep >= 0:
        return data[:sep], data[sep + 2 :]
    return data.rstrip(b"\r\n"), b""


def ascii_number(text: str, *, max_digits: int = 10) -> int | None:
    """The value of ``1*DIGIT`` (ASCII only, leading zeros allowed), or None.

    ``str.isdigit()`` accepts Unicode digits ('²', '٥') that no SIP peer means; protocol numbers
    go through here. More than ``max_digits`` significant digits is None too (no 4300-digit int).
    """
    if _DIGITS_RE.fullmatch(text) is None:
        return None
    significant = text.lstrip("0")
    if len(significant) > max_digits:
        return None
    return int(significant or "0")


def _parse_start(start: str) -> tuple[SipRequest | SipResponse, SipParseError | None]:
    """The start line, or the error it deserves once the headers are read (505, 400 + partial)."""
    if start.upper().startswith("SIP/"):
        m = _STATUS_RE.match(start)
        if m is None:
            raise SipParseError(f"bad status line {start[:80]!r}")
        return SipResponse(status=int(m.group(1)), reason=(m.group(2) or "").strip()), None
    parts = start.split(" ")
    if len(parts) < 3 or not _TOKEN_RE.match(parts[0]) or "\x00" in start:
        raise SipParseError(f"bad request line {start[:80]!r}")
    version = parts[-1]
    if not version.upper().startswith("SIP/"):
        raise SipParseError(f"bad request line {start[:80]!r}")
    uri = " ".join(parts[1:-1])
    msg = SipRequest(method=parts[0], uri=uri.strip())
    if version.upper() != "SIP/2.0":
        return msg, SipParseError(f"unsupported version {version[:20]!r}", status=505, partial=msg)
    if not msg.uri or any(c in msg.uri for c in " \t") or ":" not in msg.uri:
        return msg, SipParseError(f"bad Request-URI {msg.uri[:80]!r}", partial=msg)
    return msg, None


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram. Raises SipParseError (with ``partial`` when the head was readable).

    For any input it returns a message or raises SipParseError, nothing else.
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head, body = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = re.split(r"\r?\n", text)
    # Several SP between the elements or trailing SP: tolerated (RFC 4475 3.1.2.9/10 allow it).
    start = re.sub(r" +", " ", lines[0].strip(" \t\r"))
    msg, start_error = _parse_start(start)
    # Unfold: a line starting with whitespace continues the previous one.
    fields: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not fields:
                raise SipParseError("continuation line before any header", partial=msg)
            fields[-1] += " " + line.strip()
        elif line:
            fields.append(line)
    error: SipParseError | None = None
    for f in fields:
        name, colon, value = f.partition(":")
        name = name.strip()
        if not colon or not _TOKEN_RE.match(name):
            error = error or SipParseError(f"bad header line {f[:80]!r}", partial=msg)
            continue
        value = value.strip()
        if name.lower() in LIST_HEADERS or (len(name) == 1 and canonical_name(name).lower() in LIST_HEADERS):
            if value.strip() == "*" or not value:
                msg.headers.add(name, value)
                continue
            try:
                items = split_list_value(value)
            except SipParseError as exc:
                error = error or SipParseError(f"bad {name} list: {exc.reason}", partial=msg)
                continue
            for item in items:
                msg.headers.add(name, item)
        else:
            msg.headers.add(name, value)
    # A foreign version is answered 505 whatever else is wrong; the headers make it answerable.
    if start_error is not None:
        raise start_error
    if error is not None:
        raise error
    lengths = msg.headers.get_all("Content-Length")
    if lengths:
        length = ascii_number(lengths[0], max_digits=9)
        if length is None or any(ascii_number(v, max_digits=9) != length for v in lengths):
            raise SipParseError(f"bad Content-Length {lengths[0][:20]!r}", partial=msg)
        if length > len(body):
            raise SipParseError(
                f"truncated body: Content-Length {length}, {len(body)} bytes", partial=msg
            )
        body = body[:length]
    msg.body = body
    return msg
