"""RFC 4475 torture messages, byte-exact, fed to the sans-IO user agent and checked against the
vendored manifest (what a conformant UAS answers; ``lenient`` where the RFC lets an element
process a message anyway)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from ivrbot.sdp import build_answer
from ivrbot.sip.events import Accept, IncomingCall
from ivrbot.sip.message import SipResponse, parse_message
from ivrbot.sip.useragent import UaConfig, UserAgent

TORTURE = Path(__file__).parent / "torture"
PEER = ("192.0.2.1", 5060)


def _manifest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sip_torture_manifest", TORTURE / "manifest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


MANIFEST = _manifest()
CASES = {c.name: c for c in MANIFEST.CASES}

#: Where the bot answers otherwise than the manifest's ideal, and why that is still conformant.
DEVIATIONS: dict[str, tuple[int, str]] = {
    # The message carries a To tag: it is a request inside a dialog the bot never created, and a
    # UAS answers that 481 (RFC 3261 12.2.2) after parsing every tortuous header of it.
    "wsinv": (481, "To tag of an unknown dialog"),
}


def test_vendored_messages_are_byte_exact() -> None:
    listed = {}
    for line in (TORTURE / "messages.sha256").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    files = sorted(p.name for p in (TORTURE / "messages").glob("*.dat"))
    assert files == sorted(listed) and len(files) == 49
    for name, digest in listed.items():
        assert hashlib.sha256((TORTURE / "messages" / name).read_bytes()).hexdigest() == digest, name
    assert set(CASES) == {n.removesuffix(".dat") for n in files}


def _answers(data: bytes) -> tuple[list[SipResponse], UserAgent]:
    ua = UserAgent(UaConfig("192.0.2.10", 5060))
    ua.feed(data, PEER, 0.0)
    for ev in ua.take_events():
        if isinstance(ev, IncomingCall):
            answer = build_answer(ev.offer.media, address="192.0.2.10", port=30000, session_id=1, session_version=1)
            assert ua.answer_invite(ev.call.call_id, Accept(answer), 0.0)
    out = []
    for raw, addr in ua.take_datagrams():
        assert addr == PEER
        msg = parse_message(raw)  # everything the bot sends parses
        assert isinstance(msg, SipResponse)
        out.append(msg)
    ua.tick(1000.0)
    assert ua.open_transactions == 0
    return out, ua


@pytest.mark.parametrize("name", sorted(CASES))
def test_torture_message(name: str) -> None:
    case = CASES[name]
    data = (TORTURE / "messages" / f"{name}.dat").read_bytes()
    responses, ua = _answers(data)
    assert ua.stats.internal_errors == 0
    finals = [r.status for r in responses if r.status >= 200]
    assert len(finals) <= 1, finals
    got = finals[0] if finals else None
    if name in DEVIATIONS:
        assert got == DEVIATIONS[name][0]
        return
    if case.lenient:
        assert got in case.ideal or (got is not None and got != 400), (got, case.ideal)
    else:
        assert got in case.ideal, (got, case.ideal, case.note)
    if got is None:
        # Dropped (responses matching nothing, or unparseable): never silently, always counted.
        assert sum(ua.stats.dropped.values()) == 1
    if got is not None and got >= 300:
        # A refusal names the request it answers: the client's transaction finds it by its Via.
        assert responses[-1].header_all("Via")


def test_trailing_octets_after_content_length_are_not_a_second_request() -> None:
    responses, _ = _answers((TORTURE / "messages" / "dblreq.dat").read_bytes())
    assert [r.status for r in responses] == [405]
    assert all("INVITE" not in (r.header("CSeq") or "") for r in responses)


def test_tortuous_invite_is_parsed_in_full() -> None:
    """wsinv: folded headers, LWS around every separator, Max-Forwards 0068, CSeq 0009."""
    (resp,) = _answers((TORTURE / "messages" / "wsinv.dat").read_bytes())[0]
    assert resp.header("Call-ID") == "wsinv.ndaksdj@192.0.2.1"
    assert resp.header("CSeq") == "0009 INVITE"
    assert len(resp.header_all("Via")) == 3
