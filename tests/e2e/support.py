"""What the end-to-end tests share: a caller with two extra moves, the bot's metrics and log events.

Everything here talks to real processes over loopback; nothing is faked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Self

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ivrbot_tools.caller import AUDIBLE_LEVEL, CallRecord, SipCaller
from ivrbot_tools.demo import DEFAULT_QUESTION, trim_silence
from ivrbot_tools.local import LocalBot, LocalBotConfig
from ivrbot_tools.speech_samples import caller_speech
from ivrbot_tools.stack import Stack


class E2ECaller(SipCaller):
    """The project's SIP/RTP caller, plus what a test needs to see or do on the wire."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def bye(self) -> int:
        """Hang up; returns the final status the bot gave the BYE (0 when none came)."""
        resp = await self._request("BYE")
        self.ended.set()
        return resp.status if resp is not None else 0

    def send_rtp_datagram(self, data: bytes) -> None:
        """A raw datagram from this call's own RTP socket, so it passes the bot's source check."""
        assert self._rtp.transport is not None and self._rtp_remote is not None
        self._rtp.transport.sendto(data, self._rtp_remote)


class SharedStackBot(LocalBot):
    """An `ivrbot serve` process on the speech stack the package started once; it leaves the stack alone."""

    def __init__(self, config: LocalBotConfig, stack: Stack) -> None:
        super().__init__(config, stack.config)
        self.shared_stack = stack
        self.stack = None  # not this bot's to start or stop


def question_pcm8k(text: str = DEFAULT_QUESTION) -> bytes:
    """The caller's question: espeak-ng Korean (the Vosk model's language), 8 kHz, trailing silence cut."""
    return trim_silence(caller_speech(text, voice="ko", sample_rate=8000))


async def scrape(bot: LocalBot) -> dict[str, float]:
    """The bot's /metrics, sample name -> value (labelled samples summed)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.get(f"http://127.0.0.1:{bot.http_port}/metrics") as r,
    ):
        assert r.status == 200
        text = await r.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


async def ready(bot: LocalBot) -> int:
    """The status of the bot's /readyz (0 when it does not answer)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s,
            s.get(f"http://127.0.0.1:{bot.http_port}/readyz") as r,
        ):
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Wait (bounded) for something the processes will make true; the caller asserts the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


def events_named(bot: LocalBot, call_id: str, name: str) -> list[dict[str, Any]]:
    return [e for e in bot.events(call_id) if e.get("event") == name]


def texts(bot: LocalBot, call_id: str, name: str) -> list[str]:
    """The non-empty `text` of a call's "caller said" / "bot said" events."""
    return [str(e.get("text") or "") for e in events_named(bot, call_id, name) if str(e.get("text") or "").strip()]


async def wait_text(bot: LocalBot, call_id: str, name: str, timeout: float) -> list[str]:
    await until(lambda: bool(texts(bot, call_id, name)), timeout)
    return texts(bot, call_id, name)


def first_quiet_after(record: CallRecord, since: float, quiet_secs: float) -> float | None:
    """When the bot's audio stopped for at least `quiet_secs` after `since` (heard as silent packets)."""
    quiet_from: float | None = None
    for p in record.heard:
        if p.arrival < since or p.payload_type != 0:
            continue
        if p.level >= AUDIBLE_LEVEL:
            quiet_from = None
            continue
        if quiet_from is None:
            quiet_from = p.arrival
        if p.arrival - quiet_from >= quiet_secs:
            return quiet_from
    return None


def tools_missing() -> bool:
    import shutil

    return shutil.which("sipp") is None or shutil.which("espeak-ng") is None or shutil.which("sox") is None


def has_event(bot: LocalBot, call_id: str, name: str) -> Callable[[], bool]:
    """A condition for `until`: the bot logged `name` for this call."""
    return lambda: any(e.get("event") == name for e in bot.events(call_id))
