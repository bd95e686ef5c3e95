"""sipp and a SIP/RTP caller against a real `ivrbot serve --echo` process.

The scenarios are the ones tests/sipp runs against the in-test SipServer; here the bot's own
process answers them, and what the bot did is read from its JSON log and its /metrics.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pcapwriter import write_rtp_pcap
from sipp_runner import SippResult, run_sipp

from ivrbot.audio.g711 import pcm_to_ulaw
from ivrbot_tools.local import LocalBot

from .conftest import BotFactory
from .support import E2ECaller, has_event, question_pcm8k, scrape, tools_missing, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.skipif(tools_missing(), reason="needs sipp, espeak-ng and sox"),
]

MAX_CALLS = 2
SMALL_RANGE = 4  # two RTP/RTCP pairs: the port tests place more calls than that


@dataclass
class Target:
    host: str
    port: int


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def bot(make_echo_bot: BotFactory) -> LocalBot:
    return await make_echo_bot(max_calls=MAX_CALLS, rtp_ports=40)


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def small_range_bot(make_echo_bot: BotFactory) -> LocalBot:
    """A bot whose RTP range, not its call limit, is what runs out."""
    return await make_echo_bot(max_calls=8, rtp_ports=SMALL_RANGE)


@pytest_asyncio.fixture(loop_scope="package")
async def idle_bot(bot: LocalBot) -> AsyncIterator[LocalBot]:
    """The bot with every earlier call fully ended (its RTP ports back in the pool) before and after."""
    assert await until(lambda: _all_ended(bot), 30), "a call of an earlier test never ended"
    yield bot
    assert await until(lambda: _all_ended(bot), 30), "a call of this test never ended"
    assert bot.bot is not None and bot.bot.running, "the bot process died"


def _all_ended(bot: LocalBot) -> bool:
    evs = bot.events()
    answered = {e["call_id"] for e in evs if e.get("event") == "call answered"}
    ended = {e["call_id"] for e in evs if e.get("event") == "call ended"}
    return answered <= ended


def _calls(bot: LocalBot, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """The bot's log events per call, for the calls whose Call-ID starts with `prefix`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in bot.events():
        cid = str(e.get("call_id") or "")
        if cid.startswith(prefix):
            out.setdefault(cid, []).append(e)
    return out


def _named(evs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in evs if e.get("event") == name]


async def _sipp(bot: LocalBot, scenario: str, workdir: Path, tag: str, **kw: Any) -> SippResult:
    host, port = bot.sip_target
    return await run_sipp(Target(host, port), scenario, workdir, extra=["-cid_str", f"{tag}-%u-%p@%s"], **kw)


async def test_call_with_pcmu_audio_and_bye(idle_bot: LocalBot, tmp_path: Path) -> None:
    # 2 s of speech: the scenario plays the capture and sends BYE 2.5 s later
    sent = write_rtp_pcap(tmp_path / "caller.pcap", pcm_to_ulaw(question_pcm8k()[: 2 * 16000]))
    res = await _sipp(idle_bot, "uac_call_pcap.xml", tmp_path, "pcap")
    assert res.returncode == 0 and res.successful == 1 and res.failed == 0, res.output
    assert await until(lambda: _all_ended(idle_bot), 20)
    ((_, evs),) = _calls(idle_bot, "pcap-").items()
    assert [e["reason"] for e in _named(evs, "call ended")] == ["remote_bye"]
    (rtp,) = _named(evs, "rtp.stopped")
    assert rtp["received"] >= 0.9 * sent, rtp
    assert rtp["malformed"] == 0 and rtp["foreign_source"] == 0, rtp
    assert rtp["sent"] > 0, rtp  # the echo pipeline sent the caller's audio back


async def test_options(idle_bot: LocalBot, tmp_path: Path) -> None:
    res = await _sipp(idle_bot, "uac_options.xml", tmp_path, "options", calls=3)
    assert res.returncode == 0 and res.successful == 3, res.output


async def test_bye_for_unknown_dialog_is_481(idle_bot: LocalBot, tmp_path: Path) -> None:
    res = await _sipp(idle_bot, "uac_bye_unknown.xml", tmp_path, "unknown")
    assert res.returncode == 0 and res.successful == 1, res.output


@pytest.mark.parametrize("scenario", ["uac_invite_pcma_only.xml", "uac_invite_no_sdp.xml"])
async def test_unacceptable_invite_is_488(idle_bot: LocalBot, tmp_path: Path, scenario: str) -> None:
    tag = scenario.removeprefix("uac_").removesuffix(".xml").replace("_", "")
    res = await _sipp(idle_bot, scenario, tmp_path, tag)
    assert res.returncode == 0 and res.successful == 1, res.output
    calls = _calls(idle_bot, f"{tag}-")
    assert calls, "the bot did not log the INVITE"
    assert not any(_named(evs, "call answered") for evs in calls.values())


async def test_more_calls_than_the_limit(idle_bot: LocalBot, tmp_path: Path) -> None:
    # a burst: INVITEs arrive while earlier ones are still being set up, and all must be counted
    calls = MAX_CALLS + 8
    res = await _sipp(idle_bot, "uac_capacity.xml", tmp_path, "capacity", calls=calls, limit=calls, rate=1000)
    # the scenario itself checks that every 486/503 carries Retry-After
    assert res.returncode == 0 and res.successful == calls, res.output
    assert await until(lambda: _all_ended(idle_bot), 20)
    per_call = _calls(idle_bot, "capacity-")
    answered = [cid for cid, evs in per_call.items() if _named(evs, "call answered")]
    refused = [cid for cid, evs in per_call.items() if _named(evs, "call refused: at capacity")]
    assert len(answered) == MAX_CALLS, sorted(answered)
    assert len(refused) == calls - MAX_CALLS, sorted(refused)
    for cid in answered:
        assert [e["reason"] for e in _named(per_call[cid], "call ended")] == ["remote_bye"]


async def test_dtmf_events(idle_bot: LocalBot, tmp_path: Path) -> None:
    res = await _sipp(idle_bot, "uac_dtmf.xml", tmp_path, "dtmf")
    assert res.returncode == 0 and res.successful == 1, res.output
    assert await until(lambda: _all_ended(idle_bot), 20)
    ((_, evs),) = _calls(idle_bot, "dtmf-").items()
    (rtp,) = _named(evs, "rtp.stopped")
    assert rtp["dtmf_events"] == 4, rtp  # "1590", each counted once despite the end-packet retransmissions


async def test_malformed_sip_is_answered_or_dropped_and_counted(idle_bot: LocalBot, tmp_path: Path) -> None:
    before = (await scrape(idle_bot))["ivrbot_sip_messages_malformed_total"]
    host, port = idle_bot.sip_target
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    me = sock.getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        # not SIP at all: nothing to address a response to, so dropped (and counted)
        await loop.sock_sendto(sock, b"\x16\x03\x01\x00\xa5 this is not SIP \x00\xff", (host, port))
        # a request whose CSeq method contradicts its request line: answerable, so 400
        bad = (
            f"OPTIONS sip:ivr@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKe2ebad1\r\n"
            f"From: <sip:fuzz@127.0.0.1:{me}>;tag=f1\r\nTo: <sip:ivr@{host}:{port}>\r\n"
            "Call-ID: malformed-e2e-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        await loop.sock_sendto(sock, bad, (host, port))
        replies: list[bytes] = []
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 3.0)
            except TimeoutError:
                break
            replies.append(data)
    finally:
        sock.close()
    assert len(replies) == 1 and replies[0].startswith(b"SIP/2.0 400 "), replies
    assert b"Call-ID: malformed-e2e-1" in replies[0]
    # and sipp's truncated INVITE (Content-Length beyond the datagram) gets its 400 too
    res = await _sipp(idle_bot, "uac_malformed_400.xml", tmp_path, "truncated")
    assert res.returncode == 0 and res.successful == 1, res.output
    after = (await scrape(idle_bot))["ivrbot_sip_messages_malformed_total"]
    assert after - before == 3
    # the bot still takes calls: a real one, with its echo heard
    async with E2ECaller(idle_bot.sip_target) as call:
        assert call.record.status == 200
        t0 = time.monotonic()
        await call.play(question_pcm8k())
        assert await call.wait_audible(t0, 10.0) is not None
        assert await call.bye() == 200


async def test_malformed_rtp_mid_call_is_dropped_and_counted(idle_bot: LocalBot) -> None:
    before = (await scrape(idle_bot))["ivrbot_rtp_packets_malformed_total"]
    speech = question_pcm8k()
    garbage = [
        b"\x80\x00\x01",  # shorter than an RTP header
        bytes([0x40, 0]) + bytes(10) + b"\xff" * 160,  # RTP version 1
        bytes([0x8F, 0]) + bytes(10),  # 15 CSRCs announced, none present
        bytes([0xA0, 0]) + bytes(10) + b"\xff" * 20 + bytes([200]),  # padding longer than the packet
    ]
    async with E2ECaller(idle_bot.sip_target) as call:
        cid = call.record.call_id
        t0 = time.monotonic()
        await call.play(speech)
        assert await call.wait_audible(t0, 10.0) is not None, "no echo before the malformed packets"
        for data in garbage:
            call.send_rtp_datagram(data)
        await asyncio.sleep(0.3)
        mid = (await scrape(idle_bot))["ivrbot_rtp_packets_malformed_total"]
        t1 = time.monotonic()
        await call.play(speech)
        assert await call.wait_audible(t1, 10.0) is not None, "the call stopped echoing after malformed RTP"
        assert await call.bye() == 200
    assert mid - before == len(garbage)
    assert await until(lambda: _all_ended(idle_bot), 20)
    (rtp,) = [e for e in idle_bot.events(cid) if e.get("event") == "rtp.stopped"]
    assert rtp["malformed"] == len(garbage), rtp
    # retired sessions keep their counts in the total: the counter never goes down
    assert (await scrape(idle_bot))["ivrbot_rtp_packets_malformed_total"] - before == len(garbage)


async def test_out_of_rtp_ports_is_503_and_calls_in_progress_continue(
    small_range_bot: LocalBot, tmp_path: Path
) -> None:
    bot = small_range_bot
    calls = SMALL_RANGE // 2 + 1
    res = await _sipp(bot, "uac_capacity.xml", tmp_path, "noports", calls=calls, limit=calls, rate=100)
    assert res.returncode == 0 and res.successful == calls, res.output  # every refusal had Retry-After
    assert await until(lambda: _all_ended(bot), 20)
    per_call = _calls(bot, "noports-")
    answered = [cid for cid, evs in per_call.items() if _named(evs, "call answered")]
    refused = [cid for cid, evs in per_call.items() if _named(evs, "call refused: no RTP ports")]
    assert len(answered) == SMALL_RANGE // 2 and len(refused) == 1, per_call.keys()
    for cid in answered:
        assert [e["reason"] for e in _named(per_call[cid], "call ended")] == ["remote_bye"]


async def test_rtp_ports_are_returned_after_calls_end(small_range_bot: LocalBot) -> None:
    bot = small_range_bot
    assert await until(lambda: _all_ended(bot), 20)
    pairs = SMALL_RANGE // 2
    low = int(bot.env["IVRBOT_RTP_PORT_MIN"])
    high = int(bot.env["IVRBOT_RTP_PORT_MAX"])
    ports: list[int] = []
    for _ in range(3 * pairs):
        async with E2ECaller(bot.sip_target) as call:
            assert call.record.status == 200
            t0 = time.monotonic()
            await call.play(question_pcm8k()[:16000])
            assert await call.wait_audible(t0, 10.0) is not None
            assert await call.bye() == 200
        cid = call.record.call_id
        # the port pair is back once the bot has logged the end of the call
        assert await until(has_event(bot, cid, "call ended"), 20)
        (answered,) = [e for e in bot.events(cid) if e.get("event") == "call answered"]
        ports.append(int(answered["rtp_port"]))
    assert all(low <= p <= high and p % 2 == 0 for p in ports), ports
    assert len(set(ports)) <= pairs < len(ports)
    assert (await scrape(bot))["ivrbot_calls_active"] == 0
