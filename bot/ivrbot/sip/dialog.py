"""The UAS side of a SIP dialog (RFC 3261 section 12): identity, route set, CSeq, target.

The bot never creates dialogs; it accepts them. Requests it sends inside one (BYE, REFER) follow
the route set learnt from the INVITE's Record-Route, loose or strict (RFC 3261 12.2.1.1).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ivrbot.sip.address import NameAddress, SipUri, ip_literal, parse_name_addr, parse_uri
from ivrbot.sip.events import Addr
from ivrbot.sip.message import SipParseError, SipRequest
from ivrbot.sip.validation import RequestIdentity


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddress
    remote_party: NameAddress
    remote_target: SipUri
    route_set: list[NameAddress] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int = 0

    @classmethod
    def from_invite(cls, invite: SipRequest, ident: RequestIdentity, local_tag: str) -> Dialog:
        """Build the dialog a 2xx to ``invite`` creates (UAS: route set in Record-Route order)."""
        from_ = ident.from_
        contact_text = invite.header("Contact")
        target = from_.uri
        if contact_text:
            try:
                target = parse_name_addr(contact_text).uri
            except SipParseError:
                target = from_.uri
        routes = [parse_name_addr(v) for v in invite.header_all("Record-Route")]
        return cls(
            call_id=ident.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag or "",
            local_party=ident.to.with_tag(local_tag),
            remote_party=from_,
            remote_target=target,
            route_set=routes,
            local_cseq=secrets.randbelow(10_000) + 1,
            remote_cseq=ident.cseq,
        )

    def refresh_target(self, request: SipRequest) -> None:
        """A re-INVITE's Contact replaces the remote target (target refresh)."""
        contact = request.header("Contact")
        if contact:
            try:
                self.remote_target = parse_name_addr(contact).uri
            except SipParseError:
                pass

    def next_hop(self) -> SipUri:
        return self.route_set[0].uri if self.route_set else self.remote_target

    def destination(self, fallback: Addr) -> Addr:
        """Where to send in-dialog requests: the next hop if it is an IP literal, else ``fallback``.

        Behind OpenSIPS the next hop is the proxy's Record-Route IP; host names would need DNS
        (RFC 3263), so they fall back to the address the INVITE came from, which is the proxy.
        """
        hop = self.next_hop()
        ip = ip_literal(hop.host) if hop.host else None
        if ip is None:
            return fallback
        return ip, hop.port or (5061 if hop.scheme == "sips" else 5060)

    def build_request(
        self,
        method: str,
        *,
        branch: str | None = None,
        via_host: str,
        via_port: int,
        contact: str,
        user_agent: str,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        self.local_cseq += 1
        if self.route_set and not self.route_set[0].uri.loose_route:
            # Strict routing: first route becomes the Request-URI, the target goes last.
            uri = str(self.route_set[0].uri.without_headers())
            routes = [str(r) for r in self.route_set[1:]] + [f"<{self.remote_target}>"]
        else:
            uri = str(self.remote_target.without_headers())
            routes = [str(r) for r in self.route_set]
        req = SipRequest(method=method, uri=uri)
        h = req.headers
        h.add("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={branch or new_branch()};rport")
        h.add("Max-Forwards", "70")
        for r in routes:
            h.add("Route", r)
        h.add("From", str(self.local_party))
        h.add("To", str(self.remote_party))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.local_cseq} {method}")
        h.add("Contact", contact)
        h.add("User-Agent", user_agent)
        for name, value in extra or []:
            h.add(name, value)
        if content_type:
            h.add("Content-Type", content_type)
        req.body = body
        return req


def parse_target(text: str) -> SipUri:
    """Validate a configured transfer target (``sip:...`` with or without <>)."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return parse_uri(text)
