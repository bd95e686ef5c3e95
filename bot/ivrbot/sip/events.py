"""What the user agent core tells the application, and what the application answers."""

from __future__ import annotations

from dataclasses import dataclass

from ivrbot.sdp import SdpOffer

Addr = tuple[str, int]


@dataclass(frozen=True)
class CallInfo:
    """A call's identity as the application sees it; ``headers`` are the INVITE's, in order."""

    call_id: str
    from_uri: str
    from_tag: str
    to_uri: str
    local_tag: str
    request_uri: str
    remote_addr: Addr
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """First INVITE header ``name`` (case-insensitive, long form), e.g. an OpenSIPS X- header."""
        low = name.lower()
        for n, v in self.headers:
            if n.lower() == low:
                return v
        return None


@dataclass(frozen=True)
class Accept:
    answer_sdp: str


@dataclass(frozen=True)
class Reject:
    code: int
    reason: str = ""
    retry_after: int | None = None


Decision = Accept | Reject


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE with a usable offer: answer with ``UserAgent.answer_invite``."""

    call: CallInfo
    offer: SdpOffer


@dataclass(frozen=True)
class IncomingReinvite:
    """A re-INVITE with a usable offer: answer with ``UserAgent.answer_reinvite``."""

    call: CallInfo
    offer: SdpOffer


@dataclass(frozen=True)
class CallEstablished:
    """The ACK for the 200 arrived."""

    call: CallInfo


@dataclass(frozen=True)
class CallEnded:
    """Emitted exactly once per IncomingCall. Reasons: rejected, cancelled, remote_bye,
    local_bye, ack_timeout, local_hangup (before answer)."""

    call: CallInfo
    reason: str


@dataclass(frozen=True)
class TransferOutcome:
    call: CallInfo
    ok: bool
    detail: str


Event = IncomingCall | IncomingReinvite | CallEstablished | CallEnded | TransferOutcome
