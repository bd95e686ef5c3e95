"""What a request must be before the user agent acts on it, parsed once into its identity.

:func:`validate` either returns a :class:`RequestIdentity` (From, To, CSeq, Call-ID, top Via and
Request-URI, parsed) or raises :class:`SipParseError` with the status the request earns (400;
505 comes from the message parser). Handlers read the identity, never the raw headers again.
Checks that need the user agent's state (416, 420, 501) stay with it; they read the identity too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivrbot.sip.address import NameAddress, SipUri, Via, parse_cseq, parse_name_addr, parse_uri, parse_via
from ivrbot.sip.message import SipParseError, SipRequest, ascii_number

_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
#: Headers that may appear once (RFC 3261 7.3.1: only list headers may repeat).
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")
#: Methods of RFC 3261 and its common extensions: those the bot does not do get 405, others 501.
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)
URI_SCHEMES = ("sip", "sips")


@dataclass(frozen=True)
class RequestIdentity:
    """The parsed fields that say which dialog and transaction a request belongs to."""

    method: str
    uri: SipUri
    call_id: str
    cseq: int
    from_: NameAddress
    to: NameAddress
    via: Via  # the top one

    @property
    def from_tag(self) -> str:
        return self.from_.tag or ""

    @property
    def to_tag(self) -> str | None:
        return self.to.tag


def validate(req: SipRequest) -> RequestIdentity:
    """The request's identity, or :class:`SipParseError` (a 400) naming what is wrong."""
    for name in _REQUIRED:
        if req.header(name) is None:
            raise SipParseError(f"missing {name}")
    for name in _SINGLE:
        if len(req.header_all(name)) > 1:
            raise SipParseError(f"more than one {name}")
    vias = req.header_all("Via")
    via = parse_via(vias[0])
    for other in vias[1:]:  # stray separators make empty or broken entries (RFC 4475 3.1.2.1)
        parse_via(other)
    from_ = parse_name_addr(req.header("From") or "")
    to = parse_name_addr(req.header("To") or "")
    call_id = (req.header("Call-ID") or "").strip()
    if not call_id:
        raise SipParseError("empty Call-ID")
    cseq, method = parse_cseq(req.header("CSeq") or "")
    if method != req.method:
        raise SipParseError(f"CSeq method {method!r} does not match {req.method!r}")
    mf = req.header("Max-Forwards")
    if mf is not None and ascii_number(mf) is None:
        raise SipParseError(f"bad Max-Forwards {mf[:10]!r}")
    uri = parse_uri(req.uri)
    if req.method == "INVITE":  # what the dialog is built from must parse now, not at the answer
        for rr in req.header_all("Record-Route"):
            parse_name_addr(rr)
    return RequestIdentity(req.method, uri, req.header("Call-ID") or "", cseq, from_, to, via)


def answerable(req: SipRequest) -> bool:
    """A response can be addressed: the top Via parses (the client matches on its branch).

    Whatever else is missing or broken is copied as it is, or left out, in the 400.
    """
    vias = req.header_all("Via")
    if not vias:
        return False
    try:
        parse_via(vias[0], any_version=True)
    except SipParseError:
        return False
    return True
