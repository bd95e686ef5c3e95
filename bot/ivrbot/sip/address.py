"""SIP URIs, name-addr values, Via values and header parameters (RFC 3261 section 25).

Lenient on input (real peers vary), strict enough that every field the user agent relies on
(tags, branch, sent-by, route URIs) is either parsed correctly or rejected with ``ValueError``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ivrbot.sip.message import SipParseError, ascii_number, split_quoted


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` -> {"a": "b", "c": None}; names are case-insensitive so they are lowered."""
    params: dict[str, str | None] = {}
    for raw in split_quoted(text, ";"):
        item = raw.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError(f"empty parameter name in {text!r}")
        params[name] = val.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host = text[: end + 1]
        rest = text[end + 1 :]
    else:
        host, _, port_text = text.partition(":")
        rest = ":" + port_text if _ else ""
    port: int | None = None
    if rest:
        port = ascii_number(rest[1:], max_digits=5) if rest.startswith(":") else None
        if port is None:
            raise SipParseError(f"bad port in {text!r}")
        if not 0 < port < 65536:
            raise SipParseError(f"port out of range in {text!r}")
    if not host or any(c in host for c in " \t<>\"") or host == "[]":
        raise SipParseError(f"bad host {text!r}")
    return host, port


def ip_literal(host: str) -> str | None:
    """The bare IP if ``host`` is an IP literal (IPv6 brackets removed), else None."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


@dataclass(frozen=True)
class SipUri:
    """A sip:/sips: URI (other schemes, e.g. tel:, are kept as ``raw`` with an empty host)."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""
    raw: str = ""

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips"):
            return self.raw
        userinfo = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        hdrs = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}{hdrs}"

    @property
    def loose_route(self) -> bool:
        return "lr" in self.params

    def without_headers(self) -> SipUri:
        return SipUri(self.scheme, self.user, self.host, self.port, dict(self.params), "", self.raw)


_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")  # RFC 3986 3.1


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    if any(c <= " " or c == "\x7f" for c in text):  # no SP or CTL in a URI (RFC 3986 2)
        raise SipParseError(f"bad character in URI {text[:80]!r}")
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or _SCHEME_RE.fullmatch(scheme) is None:
        raise SipParseError(f"bad URI {text[:80]!r}")
    if scheme not in ("sip", "sips"):
        if not rest:
            raise SipParseError(f"bad URI {text!r}")
        return SipUri(scheme, None, "", None, {}, "", text)
    # '?' may appear in the user part, '@' nowhere after it: split the userinfo off first.
    user: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        user = rest[:at]
        rest = rest[at + 1 :]
    rest, _, headers = rest.partition("?")
    hostport, _, param_text = rest.partition(";")
    host, port = _split_hostport(hostport)
    return SipUri(scheme, user, host.lower(), port, parse_params(param_text), headers, text)


@dataclass(frozen=True)
class NameAddress:
    """From/To/Contact/Route/Refer-To value: optional display name, URI, header parameters."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        disp = f"{self.display} " if self.display else ""
        return f"{disp}<{self.uri}>{format_params(self.params)}"

    def with_tag(self, tag: str) -> NameAddress:
        params = dict(self.params)
        params["tag"] = tag
        return NameAddress(self.uri, self.display, params)


def parse_name_addr(text: str) -> NameAddress:
    text = text.strip()
    if not text:
        raise SipParseError("empty address")
    lt = -1
    # Find a '<' outside a quoted display name (a quoted-pair such as \\ or \" stays inside).
    in_quote = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_quote and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == "<" and not in_quote:
            lt = i
            break
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {text[:60]!r}")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <> in {text!r}")
        display = text[:lt].strip() or None
        uri = parse_uri(text[lt + 1 : gt])
        params = parse_params(text[gt + 1 :])
        return NameAddress(uri, display, params)
    # addr-spec form: parameters after the URI belong to the header, not the URI.
    uri_text, _, param_text = text.partition(";")
    if " " in uri_text.strip():
        raise SipParseError(f"bad address {text!r}")
    return NameAddress(parse_uri(uri_text), None, parse_params(param_text))


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA_RE = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+(.+)$", re.DOTALL)


_VIA_ANY_VERSION_RE = re.compile(
    r"^\s*SIP\s*/\s*[0-9]{1,3}\.[0-9]{1,3}\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+(.+)$", re.DOTALL
)


def parse_via(text: str, *, any_version: bool = False) -> Via:
    """A Via value; ``any_version`` also reads ``SIP/7.0/UDP ...`` (enough to address a 505)."""
    m = (_VIA_ANY_VERSION_RE if any_version else _VIA_RE).match(text)
    if m is None:
        raise SipParseError(f"bad Via {text[:60]!r}")
    sent_by, _, param_text = m.group(2).strip().partition(";")
    host, port = _split_hostport(sent_by)
    return Via(m.group(1).upper(), host, port, parse_params(param_text))


def parse_cseq(text: str) -> tuple[int, str]:
    parts = text.split()
    number = ascii_number(parts[0]) if len(parts) == 2 else None
    if number is None:
        raise SipParseError(f"bad CSeq {text[:40]!r}")
    if number >= 2**31:
        raise SipParseError(f"CSeq out of range {text!r}")
    return number, parts[1]
