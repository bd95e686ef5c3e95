"""Capacity fail-over through a real SIP proxy: Kamailio's dispatcher in front of two `ivrbot serve --echo`.

tests/proxy/kamailio.cfg carries the example OpenSIPS config's logic (manifests/opensips.yaml):
a bot at capacity answers 503 + Retry-After and the proxy tries the next bot WITHOUT marking the
busy one down; a bot that does not answer (408) is marked down. The calls are real SIP/RTP calls
from the project's caller through the proxy; which bot took or refused a call is read from the
bots' own JSON logs, which destinations the proxy tried from its log.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from ivrbot_tools.caller import CallFailed, SipCaller
from ivrbot_tools.local import LocalBot, LocalBotConfig, free_port, wait_for_event

KAMAILIO = shutil.which("kamailio", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
CONFIG = Path(__file__).with_name("kamailio.cfg")

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(KAMAILIO is None, reason="needs kamailio (Debian package kamailio)"),
]


class Proxy:
    """A Kamailio process on a free loopback UDP port with its own dispatcher list; `stop()` ends it."""

    def __init__(self, workdir: Path, destinations: list[tuple[int, int]], algorithm: int = 8) -> None:
        self.port = free_port(socket.SOCK_DGRAM)
        self.log_path = workdir / "kamailio.log"
        table = workdir / "dispatcher.list"
        # setid destination flags priority: algorithm 8 tries them by priority, highest first.
        table.write_text("".join(f"1 sip:127.0.0.1:{port} 0 {prio}\n" for port, prio in destinations))
        cfg = CONFIG.read_text()
        for key, value in {
            "@LISTEN@": f"127.0.0.1:{self.port}",
            "@LIST_FILE@": str(table),
            "@ALGORITHM@": str(algorithm),
            # Long: a bot wrongly marked down would stay down for the rest of the test.
            "@PING_INTERVAL@": "600",
        }.items():
            cfg = cfg.replace(key, value)
        self.cfg_path = workdir / "kamailio.cfg"
        self.cfg_path.write_text(cfg)
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def target(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self) -> None:
        assert KAMAILIO is not None
        run = self.workdir / "run"
        run.mkdir()
        self._log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            KAMAILIO, "-DD", "-E", "-f", str(self.cfg_path), "-m", "32", "-M", "4",
            "-Y", str(run), "-P", str(run / "kamailio.pid"), "-w", str(self.workdir),
            stdout=self._log, stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(100):  # bounded: answers OPTIONS once its workers run
            if self.proc.returncode is not None:
                raise RuntimeError(f"kamailio exited: {self.log_path.read_text()[-2000:]}")
            if await self._options_ok():
                return
        await self.stop()
        raise RuntimeError(f"kamailio did not answer OPTIONS: {self.log_path.read_text()[-2000:]}")

    async def _options_ok(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            port = s.getsockname()[1]
            branch = uuid.uuid4().hex
            msg = (
                f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:p@127.0.0.1>\r\n"
                f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            s.sendto(msg, self.target)
            loop = asyncio.get_running_loop()
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 4096), 0.2)
            except TimeoutError:
                return False
            return data.startswith(b"SIP/2.0 200")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def tried(self, call_id: str) -> list[tuple[str, int]]:
        """Destinations the proxy relayed this call to, in order: (event, port) from its log."""
        out: list[tuple[str, int]] = []
        pat = re.compile(r"(relay|failover) call=(\S+) dst=sip:127\.0\.0\.1:(\d+)")
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = pat.search(line)
            if m and m.group(2) == call_id:
                out.append((m.group(1), int(m.group(3))))
        return out

    def failovers(self, call_id: str) -> list[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if "failover" in line and f"call={call_id} " in line]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bots(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[LocalBot, LocalBot]]:
    """Bot A takes one call at a time; bot B more."""
    a = LocalBot(LocalBotConfig(log_path=tmp_path_factory.mktemp("bot-a") / "bot.log", echo=True, max_calls=1))
    b = LocalBot(LocalBotConfig(log_path=tmp_path_factory.mktemp("bot-b") / "bot.log", echo=True, max_calls=4))
    await a.start()
    try:
        await b.start()
        try:
            yield a, b
        finally:
            await b.stop()
    finally:
        await a.stop()


ProxyFactory = Callable[[list[tuple[int, int]]], Awaitable[Proxy]]


@pytest_asyncio.fixture(loop_scope="module")
async def make_proxy(tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    started: list[Proxy] = []

    async def make(destinations: list[tuple[int, int]]) -> Proxy:
        workdir = tmp_path / f"proxy{len(started)}"
        workdir.mkdir()
        proxy = Proxy(workdir, destinations)
        started.append(proxy)
        await proxy.start()
        return proxy

    try:
        yield make
    finally:
        for p in started:
            await p.stop()


def answered_by(bot: LocalBot, call_id: str) -> bool:
    return any(e.get("event") == "call answered" for e in bot.events(call_id))


async def answered(bot: LocalBot, call_id: str) -> bool:
    """The bot logs "call answered" just after its 200 OK leaves, so the caller can see the 200 first."""
    return await wait_for_event(bot, call_id, "call answered", 5.0) is not None


def refused_at_capacity(bot: LocalBot, call_id: str) -> bool:
    return any(e.get("event") == "call refused: at capacity" for e in bot.events(call_id))


async def wait_ended(bot: LocalBot, call_id: str) -> bool:
    for _ in range(200):
        if any(e.get("event") == "call ended" for e in bot.events(call_id)):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_bot_at_capacity_is_failed_over_and_stays_in_the_pool(
    bots: tuple[LocalBot, LocalBot], make_proxy: ProxyFactory
) -> None:
    a, b = bots
    proxy = await make_proxy([(a.sip_port, 10), (b.sip_port, 5)])

    async with SipCaller(proxy.target, answer_timeout=20) as first:
        cid1 = first.record.call_id
        assert first.record.status == 200
        assert await answered(a, cid1), "precondition: the proxy tries bot A first"

        # A is at max_calls=1: it refuses with 503 + Retry-After, the proxy goes on to B.
        async with SipCaller(proxy.target, answer_timeout=20) as second:
            cid2 = second.record.call_id
            assert second.record.status == 200
            assert refused_at_capacity(a, cid2)
            assert await answered(b, cid2)
            assert not answered_by(a, cid2)
            assert proxy.tried(cid2) == [
                ("relay", a.sip_port), ("failover", a.sip_port), ("relay", b.sip_port)
            ]
            (line,) = proxy.failovers(cid2)
            assert "code=503" in line and "mark=none" in line
        await first.hangup()
    assert await wait_ended(a, cid1)

    # A was not marked down by its 503: with no ping for minutes, the next call reaches it again.
    async with SipCaller(proxy.target, answer_timeout=20) as third:
        assert third.record.status == 200
        assert await answered(a, third.record.call_id)
        assert proxy.tried(third.record.call_id) == [("relay", a.sip_port)]
    assert await wait_ended(a, third.record.call_id)


async def test_every_bot_at_capacity_gives_the_caller_503(
    bots: tuple[LocalBot, LocalBot], make_proxy: ProxyFactory
) -> None:
    a, _ = bots
    proxy = await make_proxy([(a.sip_port, 10)])
    async with SipCaller(proxy.target, answer_timeout=20) as first:
        assert first.record.status == 200
        busy = SipCaller(proxy.target, answer_timeout=20)
        with pytest.raises(CallFailed, match="503"):
            await busy.start()
        assert refused_at_capacity(a, busy.record.call_id)


async def test_a_bot_that_does_not_answer_is_marked_down(
    bots: tuple[LocalBot, LocalBot], make_proxy: ProxyFactory
) -> None:
    _, b = bots
    dead = free_port(socket.SOCK_DGRAM)  # nothing listens: the INVITE times out (408)
    proxy = await make_proxy([(dead, 10), (b.sip_port, 5)])

    async with SipCaller(proxy.target, answer_timeout=20) as first:
        cid1 = first.record.call_id
        assert await answered(b, cid1)
        assert proxy.tried(cid1) == [("relay", dead), ("failover", dead), ("relay", b.sip_port)]
        (line,) = proxy.failovers(cid1)
        assert "code=408" in line and "mark=down" in line
    # Marked down: the next call goes straight to B.
    async with SipCaller(proxy.target, answer_timeout=20) as second:
        assert await answered(b, second.record.call_id)
        assert proxy.tried(second.record.call_id) == [("relay", b.sip_port)]


async def test_a_draining_bot_is_failed_over_too(
    bots: tuple[LocalBot, LocalBot], make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    _, b = bots
    draining = LocalBot(LocalBotConfig(log_path=tmp_path / "draining.log", echo=True, max_calls=4))
    await draining.start()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
            s.post(f"http://127.0.0.1:{draining.http_port}/drain") as r,
        ):
            assert r.status == 200  # no live call: drained at once, and it stays draining
        proxy = await make_proxy([(draining.sip_port, 10), (b.sip_port, 5)])
        async with SipCaller(proxy.target, answer_timeout=20) as call:
            cid = call.record.call_id
            assert await answered(b, cid) and not answered_by(draining, cid)
            assert proxy.tried(cid) == [("relay", draining.sip_port), ("failover", draining.sip_port),
                                        ("relay", b.sip_port)]
            (line,) = proxy.failovers(cid)
            assert "code=503" in line and "mark=none" in line
    finally:
        await draining.stop()
