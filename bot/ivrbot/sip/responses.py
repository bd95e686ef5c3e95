"""Responses built from the request they answer (RFC 3261 8.2.6), as plain functions.

Nothing here knows about transactions or sockets: the user agent decides the code and the
options, :func:`build_response` copies what RFC 3261 says a response carries over.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict, Unpack

from ivrbot.sip.address import Via, ip_literal, parse_name_addr, parse_via
from ivrbot.sip.events import Addr, Reject
from ivrbot.sip.message import SipParseError, SipRequest, SipResponse

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, INFO"
ACCEPT = "application/sdp"
REASONS = {
    100: "Trying",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
}


class ResponseOptions(TypedDict, total=False):
    """What a response adds to the copied headers; each flag is one header field."""

    reason: str | None  # reason phrase; the standard one when None
    to_tag: str | None  # added to To unless it has a tag (not on 100)
    contact: str | None
    allow: bool  # Allow: ALLOW
    accept: bool  # Accept: application/sdp
    supported: bool  # an empty Supported: the bot supports no extension
    retry_after: int | None
    sdp: str | None  # an SDP body with its Content-Type
    extra: Iterable[tuple[str, str]]  # anything else, e.g. Warning, Unsupported


def reason_phrase(code: int) -> str:
    return REASONS.get(code, "Unknown")


def stamp_via(via_text: str, source: Addr) -> str:
    """RFC 3261 18.2.1 received= and RFC 3581 rport= on the top Via."""
    try:
        via = parse_via(via_text)
    except SipParseError:
        return via_text
    params = dict(via.params)
    if "rport" in params:
        params["rport"] = str(source[1])
        params["received"] = source[0]
    elif ip_literal(via.host) != source[0]:
        params["received"] = source[0]
    return str(Via(via.transport, via.host, via.port, params))


def warning(code: int, host: str, text: str) -> str:
    """A Warning value; the text (which may quote the peer's bytes) made a safe quoted-string."""
    safe = "".join(c if c.isprintable() and c not in '"\\' else "'" for c in text[:100])
    return f'{code} {host} "{safe}"'


def build_response(
    req: SipRequest, code: int, *, source: Addr, server: str, **opts: Unpack[ResponseOptions]
) -> SipResponse:
    """The response ``code`` to ``req`` received from ``source``.

    Via, From, To, Call-ID and CSeq are copied as they are (a 400 may answer a request that
    lacks some of them: what is there is copied, the rest left out); the top Via gets
    received/rport; a 200 to an INVITE copies Record-Route.
    """
    resp = SipResponse(status=code, reason=opts.get("reason") or reason_phrase(code))
    h = resp.headers
    for i, via_text in enumerate(req.header_all("Via")):
        h.add("Via", stamp_via(via_text, source) if i == 0 else via_text)
    if code == 200 and req.method == "INVITE":
        for rr in req.header_all("Record-Route"):
            h.add("Record-Route", rr)
    from_ = req.header("From")
    if from_ is not None:
        h.add("From", from_)
    to = req.header("To")
    to_tag = opts.get("to_tag")
    if to is not None:
        if code > 100 and to_tag is not None:
            try:
                if parse_name_addr(to).tag is None:
                    to = f"{to};tag={to_tag}"
            except SipParseError:
                pass
        h.add("To", to)
    for name in ("Call-ID", "CSeq"):
        value = req.header(name)
        if value is not None:
            h.add(name, value)
    h.add("Server", server)
    contact = opts.get("contact")
    if contact:
        h.add("Contact", contact)
    if opts.get("allow"):
        h.add("Allow", ALLOW)
    if opts.get("accept"):
        h.add("Accept", ACCEPT)
    if opts.get("supported"):
        h.add("Supported", "")
    retry_after = opts.get("retry_after")
    if retry_after is not None:
        h.add("Retry-After", str(retry_after))
    for name, value in opts.get("extra", ()):
        h.add(name, value)
    sdp = opts.get("sdp")
    if sdp is not None:
        h.add("Content-Type", "application/sdp")
        resp.body = sdp.encode()
    return resp


def refusal(decision: Reject) -> tuple[int, str | None, int | None]:
    """Code, reason phrase and Retry-After for an application's Reject.

    A code outside 300..699 becomes 500 (with the standard phrase); a phrase that is not
    printable is replaced by the standard one.
    """
    code = decision.code if 300 <= decision.code <= 699 else 500
    reason = decision.reason if decision.reason and code == decision.code else None
    if reason is not None and not all(c.isprintable() for c in reason):
        reason = None
    return code, reason, decision.retry_after
