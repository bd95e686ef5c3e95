"""The states of the bot's SIP machines and the only transitions allowed between them.

One table per machine, ``(state, event) -> next state``, in the manner of h11's ``_state``:
what a machine may do is read here, not reconstructed from the code that drives it. Every
state change goes through :func:`advance`; a pair missing from the table is a bug in the core
and raises :class:`StateError` (which ``UserAgent.feed`` counts as an internal error and
recovers from with a 500).
"""

from __future__ import annotations

from enum import Enum


class StateError(RuntimeError):
    """An event the machine's table does not allow in its current state (a core bug)."""


class IstState(Enum):
    """INVITE server transaction (RFC 3261 17.2.1 with RFC 6026's Accepted state)."""

    PROCEEDING = "proceeding"  # 100 sent, waiting for the application or a refusal
    ACCEPTED = "accepted"  # 2xx sent and retransmitted until the ACK (RFC 6026)
    COMPLETED = "completed"  # non-2xx final sent, retransmitted until the ACK (Timer G/H)
    CONFIRMED = "confirmed"  # ACK seen (or given up on): absorbing retransmissions (Timer I)
    TERMINATED = "terminated"  # freed


class IstEvent(Enum):
    FINAL_2XX = "final_2xx"
    FINAL_ERROR = "final_error"  # a 3xx-6xx final response
    ACK = "ack"
    NO_ACK = "no_ack"  # 64*T1 without an ACK for the 2xx, or the call ended meanwhile
    EXPIRE = "expire"  # Timer H / I / the absorb window ran out


IST_TRANSITIONS: dict[tuple[IstState, IstEvent], IstState] = {
    (IstState.PROCEEDING, IstEvent.FINAL_2XX): IstState.ACCEPTED,
    (IstState.PROCEEDING, IstEvent.FINAL_ERROR): IstState.COMPLETED,
    (IstState.ACCEPTED, IstEvent.ACK): IstState.CONFIRMED,
    (IstState.ACCEPTED, IstEvent.NO_ACK): IstState.CONFIRMED,
    (IstState.COMPLETED, IstEvent.ACK): IstState.CONFIRMED,
    (IstState.COMPLETED, IstEvent.EXPIRE): IstState.TERMINATED,
    (IstState.CONFIRMED, IstEvent.EXPIRE): IstState.TERMINATED,
}


class ClientState(Enum):
    """Non-INVITE client transaction the bot started (RFC 3261 17.1.2): BYE, REFER."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    TERMINATED = "terminated"


class ClientEvent(Enum):
    PROVISIONAL = "provisional"  # a 1xx arrived
    FINAL = "final"  # a final response arrived
    TIMEOUT = "timeout"  # Timer F


CLIENT_TRANSITIONS: dict[tuple[ClientState, ClientEvent], ClientState] = {
    (ClientState.TRYING, ClientEvent.PROVISIONAL): ClientState.PROCEEDING,
    (ClientState.PROCEEDING, ClientEvent.PROVISIONAL): ClientState.PROCEEDING,
    (ClientState.TRYING, ClientEvent.FINAL): ClientState.TERMINATED,
    (ClientState.PROCEEDING, ClientEvent.FINAL): ClientState.TERMINATED,
    (ClientState.TRYING, ClientEvent.TIMEOUT): ClientState.TERMINATED,
    (ClientState.PROCEEDING, ClientEvent.TIMEOUT): ClientState.TERMINATED,
}


class CallState(Enum):
    """A call as the UAS sees it: the dialog's life from the INVITE to its end."""

    PENDING = "pending"  # waiting for the application's decision (early, no dialog yet)
    ANSWERING = "answering"  # 200 sent, dialog built, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK received: the call is up
    ENDING = "ending"  # our BYE is out, waiting for its answer
    ENDED = "ended"  # CallEnded emitted; the call is forgotten


class CallEvent(Enum):
    ACCEPT = "accept"  # the application accepted: 200 sent
    ACK = "ack"
    BYE_SENT = "bye_sent"
    END = "end"  # rejected, cancelled, remote BYE, our BYE answered, ACK timeout, error


CALL_TRANSITIONS: dict[tuple[CallState, CallEvent], CallState] = {
    (CallState.PENDING, CallEvent.ACCEPT): CallState.ANSWERING,
    (CallState.PENDING, CallEvent.END): CallState.ENDED,
    (CallState.ANSWERING, CallEvent.ACK): CallState.CONFIRMED,
    (CallState.ANSWERING, CallEvent.BYE_SENT): CallState.ENDING,
    (CallState.ANSWERING, CallEvent.END): CallState.ENDED,
    (CallState.CONFIRMED, CallEvent.BYE_SENT): CallState.ENDING,
    (CallState.CONFIRMED, CallEvent.END): CallState.ENDED,
    (CallState.ENDING, CallEvent.END): CallState.ENDED,
}

def advance[S: Enum, E: Enum](table: dict[tuple[S, E], S], state: S, event: E) -> S:
    """The state ``event`` leads to from ``state``; :class:`StateError` if the table forbids it."""
    try:
        return table[(state, event)]
    except KeyError:
        raise StateError(
            f"{type(state).__name__}: event {event.value!r} is not allowed in state {state.value!r}"
        ) from None
