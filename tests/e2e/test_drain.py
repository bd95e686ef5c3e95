"""SIGTERM (what Kubernetes sends a pod it replaces): the bot stops taking calls, answers OPTIONS
and INVITE with 503 so OpenSIPS's dispatcher moves on, lets the live call finish, then exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid

import numpy as np
import pytest

from ivrbot.sip.message import SipResponse, parse_message
from ivrbot_tools.caller import CallFailed

from .conftest import BotFactory
from .support import E2ECaller, tools_missing, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.skipif(tools_missing(), reason="needs sipp, espeak-ng and sox"),
]


def options_status(target: tuple[str, int]) -> int:
    """Send one OPTIONS from a fresh socket; the final status (0 when nothing came back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        port = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:ivr@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{port}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:ivr@{target[0]}:{target[1]}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), target)
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return 0
    resp = parse_message(data)
    return resp.status if isinstance(resp, SipResponse) else 0


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()


async def test_sigterm_drains_then_exits(make_echo_bot: BotFactory) -> None:
    bot = await make_echo_bot(max_calls=4, IVRBOT_DRAIN_GRACE_SECONDS="60")
    assert bot.bot is not None and bot.bot.pid is not None
    assert await asyncio.to_thread(options_status, bot.sip_target) == 200

    async with E2ECaller(bot.sip_target) as live:
        await live.play(tone(0.5))
        os.kill(bot.bot.pid, signal.SIGTERM)
        # draining: new calls and health probes are refused with 503 ...
        assert await until(lambda: options_status(bot.sip_target) == 503, 10)
        with pytest.raises(CallFailed, match="503"):
            async with E2ECaller(bot.sip_target):
                pass
        # ... while the live call goes on: its audio still comes back
        since = time.monotonic()
        await live.play(tone(1.0))
        assert await live.wait_audible(since, 5.0) is not None, "the live call lost its media while draining"
        assert bot.bot.running, "the bot exited with a call still up"
        assert await live.bye() == 200
    # the last call ended: the bot finishes draining and exits cleanly
    assert await asyncio.wait_for(bot.bot.wait(), 30) == 0
