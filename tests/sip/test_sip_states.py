"""The transition tables of ``ivrbot.sip.states`` are the whole truth: whatever requests,
responses to the bot's own BYE/REFER, application actions and clock steps arrive, every state
change the core makes is a pair in its machine's table, and every server transaction still ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipmsg import ANSWER, OFFER, PEER, Harness, request
from test_sip_invariant import World, _negotiation, datagram
from test_sip_useragent import answered_call, invite

from ivrbot.sip import states
from ivrbot.sip.events import Accept, CallEnded, IncomingCall, IncomingReinvite, Reject
from ivrbot.sip.message import SipRequest, SipResponse, parse_message
from ivrbot.sip.states import (
    CALL_TRANSITIONS,
    CLIENT_TRANSITIONS,
    IST_TRANSITIONS,
    CallEvent,
    CallState,
    IstEvent,
    IstState,
    StateError,
    advance,
)

ACTIONS = ["invite", "feed", "tick", "decide", "decide", "ack", "hangup", "transfer", "respond", "notify"]
TABLES: list[dict[Any, Any]] = [IST_TRANSITIONS, CLIENT_TRANSITIONS, CALL_TRANSITIONS]


@contextmanager
def recorded() -> Iterator[tuple[list[tuple[Enum, Enum, Enum]], list[StateError]]]:
    """Every transition the core takes, and every one it tried that the table refused."""
    taken: list[tuple[Enum, Enum, Enum]] = []
    refused: list[StateError] = []
    real = states.advance

    def spy(table: dict[Any, Any], state: Enum, event: Enum) -> Enum:
        try:
            new = real(table, state, event)
        except StateError as exc:
            refused.append(exc)
            raise
        taken.append((state, event, new))
        return new

    with mock.patch.object(states, "advance", side_effect=spy):
        yield taken, refused


def _answer(req: SipRequest, status: int) -> bytes:
    """A peer's response to a request the bot sent (BYE, REFER)."""
    resp = SipResponse(status=status, reason="X")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in req.header_all(name):
            resp.headers.add(name, value)
    to = resp.header("To") or ""
    if status > 100 and ";tag=" not in to:
        resp.headers.set("To", to + ";tag=peer")
    return resp.to_bytes()


@settings(max_examples=200)
@given(st.data())
def test_every_transition_taken_is_in_its_table(data: st.DataObject) -> None:
    w = World()
    sent: list[SipRequest] = []
    acks: dict[str, int] = {}  # call-id -> CSeq of the INVITE the bot said 200 to
    notify_cseq = 100
    with mock.patch("ivrbot.sip.calls.parse_offer", side_effect=_negotiation), recorded() as (taken, refused):

        def collect() -> None:
            out = w.ua.take_datagrams()
            for msg in (parse_message(d) for d, _ in out):
                if isinstance(msg, SipRequest):
                    sent.append(msg)
                elif msg.status == 200 and (msg.header("CSeq") or "").endswith("INVITE"):
                    acks[msg.header("Call-ID") or ""] = int((msg.header("CSeq") or "0").split()[0])
            w.ua._out = out  # World.collect reads them again
            w.collect()

        for _ in range(data.draw(st.integers(1, 40))):
            action = data.draw(st.sampled_from(ACTIONS))
            calls = sorted(w.tags)
            if action == "invite":  # a well-formed new call, so that dialogs get far
                notify_cseq += 1
                call_id = data.draw(st.sampled_from(["c1", "c2", "c3"]))
                w.ua.feed(request("INVITE", call_id=call_id, branch=f"z9hG4bKi{notify_cseq}", body=OFFER), PEER, w.now)
            elif action == "feed":
                w.ua.feed(data.draw(datagram(sorted(set(w.tags.values())))), PEER, w.now)
            elif action == "tick":
                w.now += data.draw(st.sampled_from([0.1, 0.5, 1.0, 4.0, 33.0]))
                w.ua.tick(w.now)
            elif action == "decide" and w.pending:
                ev = w.pending.pop(data.draw(st.integers(0, len(w.pending) - 1)))
                answer = w.ua.answer_invite if isinstance(ev, IncomingCall) else w.ua.answer_reinvite
                if data.draw(st.booleans()):
                    answer(ev.call.call_id, Accept(ANSWER), w.now)
                else:
                    answer(ev.call.call_id, Reject(data.draw(st.sampled_from([486, 0, 1000]))), w.now)
            elif action == "ack" and acks:
                call_id = data.draw(st.sampled_from(sorted(acks)))
                ack = request("ACK", call_id=call_id, cseq=acks[call_id], branch="z9hG4bKack", to_tag=w.tags[call_id])
                w.ua.feed(ack, PEER, w.now)
            elif action == "hangup":
                w.ua.hangup(data.draw(st.sampled_from(["c1", "c2", "c3"])), w.now)
            elif action == "transfer" and calls:
                w.ua.transfer(data.draw(st.sampled_from(calls)), "sip:desk@10.0.0.7", w.now, 10.0)
            elif action == "respond" and sent:
                req = sent[data.draw(st.integers(0, len(sent) - 1))]
                w.ua.feed(_answer(req, data.draw(st.sampled_from([100, 180, 200, 202, 481, 500]))), PEER, w.now)
            elif action == "notify" and calls:  # or a BYE: the peer's requests inside the dialog
                call_id = data.draw(st.sampled_from(calls))
                notify_cseq += 1
                frag = data.draw(st.sampled_from(["SIP/2.0 100 Trying", "SIP/2.0 200 OK", "SIP/2.0 503 No"]))
                w.ua.feed(
                    request(
                        data.draw(st.sampled_from(["NOTIFY", "BYE"])),
                        call_id=call_id, cseq=notify_cseq, branch=f"z9hG4bKn{notify_cseq}",
                        to_tag=w.tags[call_id], body=frag, content_type="message/sipfrag",
                        extra=["Event: refer", "Subscription-State: active"],
                    ),
                    PEER,
                    w.now,
                )
            collect()
        for _ in range(12):
            w.now += 10.0
            w.ua.tick(w.now)
            collect()
    assert refused == []
    for state, event, new in taken:
        assert any(table.get((state, event)) is new for table in TABLES), (state, event, new)
    assert w.ua.open_transactions == 0
    assert w.ua.next_deadline() is None
    for key, codes in w.responses.items():
        assert codes[-1] >= 200, (key, codes)


def test_a_forbidden_transition_is_a_clear_internal_error() -> None:
    with pytest.raises(StateError, match="'ack' is not allowed in state 'proceeding'"):
        advance(IST_TRANSITIONS, IstState.PROCEEDING, IstEvent.ACK)
    with pytest.raises(StateError, match="CallState"):
        advance(CALL_TRANSITIONS, CallState.ENDED, CallEvent.ACCEPT)
    assert advance(CALL_TRANSITIONS, CallState.PENDING, CallEvent.ACCEPT) is CallState.ANSWERING


def test_terminal_states_have_no_way_out() -> None:
    for table in TABLES:
        terminal = {s for s in type(next(iter(table))[0]) if s.value in ("terminated", "ended")}
        assert terminal, table
        assert not [k for k in table if k[0] in terminal]
        assert terminal <= set(table.values())  # and each machine can reach its end


def test_an_unacked_reinvite_2xx_while_our_bye_is_out_ends_the_call_once() -> None:
    """Hang up while a re-INVITE's 2xx waits for its ACK: the ACK never comes. The call is
    already ending, so no second BYE (CallState has no ENDING -> BYE_SENT) and no internal error."""
    h = Harness()
    tag = answered_call(h)
    h.feed(invite(cseq=2, branch="z9hG4bKre", to_tag=tag))
    assert isinstance(h.events[-1], IncomingReinvite)
    assert h.ua.answer_reinvite("call-1", Accept(ANSWER), h.now)
    assert h.ua.hangup("call-1", h.now)
    out = h.advance(40.0, step=0.5)
    byes = [m for m in out if isinstance(m, SipRequest) and m.method == "BYE"]
    assert len({m.header("Via") for m in byes}) == 1  # one BYE transaction (resent, not doubled)
    assert h.ua.stats.internal_errors == 0
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["ack_timeout"]
