"""The Piper server's synthesis scheduler (unit test of one class, over a real thread pool).

Jobs here block on events the test sets, so what started when is decided by the test, never by
how fast the machine is.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot_sidecars.synthesis_scheduler import SynthesisScheduler

FAR = 3600.0  # a deadline an hour away: read-ahead for the whole test


class Gated:
    """A job that records its start and then waits for the test to let it finish."""

    def __init__(self, name: str, started: list[str]) -> None:
        self.name = name
        self.started = started
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.append(self.name)
        self.release.wait(10)
        return self.name


async def until(predicate: object, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - set by worker threads, not an Event
            await asyncio.sleep(0.005)


async def test_an_urgent_job_starts_while_read_ahead_holds_its_share_of_the_workers() -> None:
    loop = asyncio.get_running_loop()
    started: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        s = SynthesisScheduler(pool, workers=2)
        ahead1, ahead2, first = Gated("ahead1", started), Gated("ahead2", started), Gated("first", started)
        f1 = s.submit(loop.time() + FAR, ahead1)
        f2 = s.submit(loop.time() + FAR + 1, ahead2)
        await until(lambda: started == ["ahead1"])
        assert s.queued == 1  # the second read-ahead waits: one worker stays free
        f3 = s.submit(loop.time(), first)  # a caller hears silence until this is done
        await until(lambda: started == ["ahead1", "first"])
        assert not f2.done() and "ahead2" not in started
        first.release.set()
        assert await f3 == "first"
        ahead1.release.set()
        assert await f1 == "ahead1"
        await until(lambda: "ahead2" in started)  # deferred, not dropped
        ahead2.release.set()
        assert await f2 == "ahead2"
        assert (s.running, s.running_ahead, s.queued) == (0, 0, 0)
        s.close()


async def test_a_withdrawn_job_never_runs_and_a_started_one_cannot_be_withdrawn() -> None:
    loop = asyncio.get_running_loop()
    started: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        s = SynthesisScheduler(pool, workers=1)
        busy, queued = Gated("busy", started), Gated("queued", started)
        f1 = s.submit(loop.time(), busy)
        f2 = s.submit(loop.time(), queued)
        await until(lambda: started == ["busy"])
        assert s.withdraw(f2) and f2.cancelled()
        assert not s.withdraw(f1)
        busy.release.set()
        assert await f1 == "busy"
        await asyncio.sleep(0.05)
        assert started == ["busy"] and s.running == 0
        s.close()


async def test_a_read_ahead_job_becomes_urgent_as_its_deadline_comes_near() -> None:
    loop = asyncio.get_running_loop()
    started: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        s = SynthesisScheduler(pool, workers=2, urgent_within=1.0)
        hog, soon = Gated("hog", started), Gated("soon", started)
        f1 = s.submit(loop.time() + FAR, hog)
        await until(lambda: started == ["hog"])
        # read-ahead as submitted (deadline 1.2 s away), urgent 0.2 s later: started by the timer
        f2 = s.submit(loop.time() + 1.2, soon)
        await until(lambda: "soon" in started)
        assert not f1.done()
        soon.release.set()
        hog.release.set()
        assert (await f1, await f2) == ("hog", "soon")
        assert s.started_urgent == 1 and s.started_ahead == 1
        s.close()


async def test_close_cancels_what_has_not_started() -> None:
    loop = asyncio.get_running_loop()
    started: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        s = SynthesisScheduler(pool, workers=1)
        busy = Gated("busy", started)
        f1 = s.submit(loop.time(), busy)
        f2 = s.submit(loop.time(), Gated("never", started))
        await until(lambda: started == ["busy"])
        s.close()
        assert f2.cancelled()
        busy.release.set()
        assert await f1 == "busy"
        assert started == ["busy"]


job = st.tuples(st.sampled_from([0.0, 0.5, 2.0, FAR]), st.booleans())  # (deadline offset, withdraw it)


@given(jobs=st.lists(job, min_size=1, max_size=12), workers=st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_every_job_ends_exactly_once_whatever_the_mix(jobs: list[tuple[float, bool]], workers: int) -> None:
    """Whatever deadlines and withdrawals: each job either runs once and delivers its result or is
    withdrawn before it starts and never runs; the scheduler ends with nothing running or queued."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ran: list[int] = []
        lock = threading.Lock()

        def work(i: int) -> int:
            with lock:
                ran.append(i)
            return i

        with ThreadPoolExecutor(workers) as pool:
            s = SynthesisScheduler(pool, workers=workers)
            futures = [s.submit(loop.time() + offset, work, i) for i, (offset, _) in enumerate(jobs)]
            withdrawn = {i for i, (_, w) in enumerate(jobs) if w and s.withdraw(futures[i])}
            for i, fut in enumerate(futures):
                if i in withdrawn:
                    assert fut.cancelled()
                else:
                    assert await asyncio.wait_for(fut, 10) == i
            assert sorted(ran) == [i for i in range(len(jobs)) if i not in withdrawn]
            assert (s.running, s.running_ahead, s.queued) == (0, 0, 0)
            s.close()

    asyncio.run(run())
