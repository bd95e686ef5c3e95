"""Which sentence Piper synthesizes next when several calls want one: the one a caller hears soonest.

Each connection synthesizes its next sentence while the current one is sent, and the bot sends a
whole reply within about a second of its first token, so a call that has just started to reply
keeps a worker busy with sentences it will play seconds later. A plain thread pool serves jobs in
arrival order: another call's first chunk, which its caller is waiting for in silence, queued
behind that read-ahead (measured: 70 ms to first audio alone, 284 ms while two other connections
synthesized their replies).

So every job carries a deadline, the time its connection runs out of audio to play; jobs start in
deadline order, and read-ahead (a deadline further away than ``urgent_within``) may occupy at most
``workers - 1`` workers, so one is always free for a caller about to hear silence. Read-ahead is
only deferred, never dropped: it starts when a read-ahead worker is free, or as its deadline comes
within ``urgent_within`` (1 s). The caller makes the deadline the time the connection runs dry less
what the job is expected to take, so a deferred sentence is still ready before then.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)


class SynthesisScheduler:
    """Earliest-deadline-first over an executor of ``workers`` threads, one kept for urgent jobs."""

    def __init__(self, executor: Executor, workers: int, urgent_within: float = 1.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.executor = executor
        self.workers = workers
        self.urgent_within = urgent_within
        #: read-ahead may run on this many workers at once (all of them when there is only one)
        self.ahead_limit = max(1, workers - 1)
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.running = 0
        self.running_ahead = 0
        #: jobs started while urgent, and while read-ahead (for tests and the log)
        self.started_urgent = 0
        self.started_ahead = 0

    @property
    def queued(self) -> int:
        return sum(1 for job in self._heap if not job.future.done())

    def submit(self, deadline: float, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` in the executor when its turn comes; ``deadline`` is in loop time."""
        loop = asyncio.get_running_loop()
        job = _Job(deadline, next(self._seq), fn, args, loop.create_future())
        if self._closed:
            job.future.cancel()  # the server is stopping: nothing more runs
            return job.future
        heapq.heappush(self._heap, job)
        self._dispatch()
        return job.future

    def withdraw(self, future: asyncio.Future[Any]) -> bool:
        """Cancel a job that has not started (True); a started one runs to its end (False)."""
        for job in self._heap:
            if job.future is future:
                future.cancel()  # _dispatch skips it; nothing runs it
                return True
        return False

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed and self._heap and self.running < self.workers:
            job = self._heap[0]
            if job.future.done():  # withdrawn
                heapq.heappop(self._heap)
                continue
            urgent = job.deadline - loop.time() <= self.urgent_within
            if not urgent and self.running_ahead >= self.ahead_limit:
                # The earliest job is read-ahead and its share is taken; later ones are too (later
                # deadlines). Its turn comes when a read-ahead job ends or the deadline nears.
                self._wake_at(job.deadline - self.urgent_within)
                return
            heapq.heappop(self._heap)
            self._start(job, urgent)

    def close(self) -> None:
        """Start nothing more; queued jobs are cancelled (the executor belongs to the caller)."""
        self._closed = True
        for job in self._heap:
            job.future.cancel()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake_at(self, when: float) -> None:
        if self._timer is not None and not self._timer.cancelled() and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()

    def _start(self, job: _Job, urgent: bool) -> None:
        self.running += 1
        if urgent:
            self.started_urgent += 1
        else:
            self.running_ahead += 1
            self.started_ahead += 1
        work = asyncio.get_running_loop().run_in_executor(self.executor, job.fn, *job.args)

        def done(fut: asyncio.Future[Any]) -> None:
            self.running -= 1
            if not urgent:
                self.running_ahead -= 1
            if not job.future.done():
                if fut.cancelled():
                    job.future.cancel()
                elif fut.exception() is not None:
                    job.future.set_exception(fut.exception())  # type: ignore[arg-type]
                else:
                    job.future.set_result(fut.result())
            self._dispatch()

        work.add_done_callback(done)
