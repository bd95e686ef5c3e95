"""The core invariant, as a property: whatever datagrams arrive, whenever the clock moves, and
whatever the application and the SDP negotiation do (accept, refuse with any code, raise, never
answer), every server transaction ends with a final response and is freed after its timers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from unittest import mock

from hostile import mutate
from hypothesis import given, settings
from hypothesis import strategies as st
from sipmsg import ANSWER, OFFER, PEER, request
from test_sip_fuzz import DrawChooser

from ivrbot.sdp import parse_offer
from ivrbot.sip.address import parse_name_addr
from ivrbot.sip.events import Accept, IncomingCall, IncomingReinvite, Reject
from ivrbot.sip.message import SipResponse, parse_message
from ivrbot.sip.useragent import UaConfig, UserAgent

RAISE_MARK = "a=x-test-raise"


def _negotiation(body: bytes | str) -> object:
    """SDP negotiation that raises (a bug) when the offer carries the test mark."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if RAISE_MARK in text:
        raise RuntimeError("negotiation bug")
    return parse_offer(body)


@dataclass
class World:
    ua: UserAgent = field(default_factory=lambda: UserAgent(UaConfig("192.0.2.10", 5060)))
    now: float = 0.0
    pending: list[IncomingCall | IncomingReinvite] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # call-id -> the bot's tag
    #: responses by (Call-ID, CSeq, top Via): one server transaction each
    responses: dict[tuple[str, str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    injected: int = 0

    def collect(self) -> None:
        for data, _ in self.ua.take_datagrams():
            msg = parse_message(data)
            if isinstance(msg, SipResponse):
                vias = msg.header_all("Via")
                key = (msg.header("Call-ID") or "", msg.header("CSeq") or "", vias[0] if vias else "")
                self.responses[key].append(msg.status)
                if msg.status == 200 and (msg.header("CSeq") or "").endswith("INVITE"):
                    tag = parse_name_addr(msg.header("To") or "").tag
                    if tag:
                        self.tags[msg.header("Call-ID") or ""] = tag
        for ev in self.ua.take_events():
            if isinstance(ev, IncomingCall | IncomingReinvite):
                self.pending.append(ev)


@st.composite
def datagram(draw: st.DrawFn, world_tags: list[str]) -> bytes:
    call_id = draw(st.sampled_from(["c1", "c2", "c3"]))
    branch = "z9hG4bK" + draw(st.sampled_from(["a", "b", "c", "d"])) if draw(st.booleans()) else "old1"
    cseq = draw(st.integers(1, 4))
    method = draw(st.sampled_from(["INVITE", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "FOO"]))
    body = ""
    if method == "INVITE":
        body = draw(st.sampled_from([OFFER, OFFER + RAISE_MARK + "\r\n", OFFER.replace("40000", "²"), ""]))
    to_tag = draw(st.sampled_from([None, "wrong", *world_tags]))
    data = request(method, call_id=call_id, cseq=cseq, branch=branch, body=body, to_tag=to_tag)
    if draw(st.integers(0, 4)) == 0:
        data = mutate(data, DrawChooser(draw))
    return data


@settings(max_examples=150)  # each example is a whole conversation of up to 25 steps
@given(st.data())
def test_every_server_transaction_ends_and_is_freed(data: st.DataObject) -> None:
    w = World()
    with mock.patch("ivrbot.sip.calls.parse_offer", side_effect=_negotiation):
        for _ in range(data.draw(st.integers(1, 25))):
            action = data.draw(st.sampled_from(["feed", "feed", "feed", "tick", "decide"]))
            if action == "feed":
                w.ua.feed(data.draw(datagram(sorted(set(w.tags.values())))), PEER, w.now)
            elif action == "tick":
                w.now += data.draw(st.sampled_from([0.1, 0.5, 1.0, 4.0, 33.0]))
                w.ua.tick(w.now)
            elif w.pending:
                ev = w.pending.pop(data.draw(st.integers(0, len(w.pending) - 1)))
                answer = w.ua.answer_invite if isinstance(ev, IncomingCall) else w.ua.answer_reinvite
                choice = data.draw(st.sampled_from(["accept", "reject", "odd", "raise", "never"]))
                if choice == "accept":
                    answer(ev.call.call_id, Accept(ANSWER), w.now)
                elif choice == "reject":
                    answer(ev.call.call_id, Reject(data.draw(st.sampled_from([486, 503, 603]))), w.now)
                elif choice == "odd":  # a handler bug: not a final code
                    answer(ev.call.call_id, Reject(data.draw(st.sampled_from([0, 180, 200, 1000]))), w.now)
                elif choice == "raise":  # applying the answer fails inside the core
                    w.injected += 1
                    with mock.patch("ivrbot.sip.useragent.Dialog.from_invite", side_effect=RuntimeError("bug")):
                        answer(ev.call.call_id, Accept(ANSWER), w.now)
                # "never": the application hangs; the core must not wait for ever
            w.collect()
        # Let every timer run out (64*T1 and the app deadline are 32 s; T4 5 s).
        for _ in range(12):
            w.now += 10.0
            w.ua.tick(w.now)
            w.collect()
    assert w.ua.open_transactions == 0
    assert w.ua.next_deadline() is None
    for key, codes in w.responses.items():
        assert codes[-1] >= 200, (key, codes)  # no transaction left at 100 Trying
