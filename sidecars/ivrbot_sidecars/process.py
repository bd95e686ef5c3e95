"""A supervised child process with a readiness check and a clean, bounded stop.

The stack and the tests run each sidecar as its own process, as a pod would, so a crash or a
hang in one is seen, named and reported instead of taking the caller down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import IO

from ivrbot_sidecars.logs import get_logger

log = get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


class SidecarError(RuntimeError):
    """A sidecar could not start or died; the message names it and says why in one line."""


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port); checked before a spawn so the error is clear."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


async def tcp_ready(host: str, port: int) -> bool:
    """Readiness for servers that bind only after their model is loaded."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


class ManagedProcess:
    """One named child process: start, wait until ready, watch, stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready: ReadyCheck,
        *,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 180.0,
        output: IO[bytes] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._ready = ready
        self._env = {**os.environ, **(env or {})}
        self._host = host
        self._port = port
        self._start_timeout = start_timeout
        #: where the child's output goes; None keeps its last lines for error messages
        self._output = output
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: deque[str] = deque(maxlen=20)
        self._reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def last_output(self) -> str:
        return " | ".join(self._tail)

    async def start(self) -> None:
        if self._port is not None and port_in_use(self._host, self._port):
            raise SidecarError(f"{self.name}: port {self._host}:{self._port} is already in use")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self._env,
                stdout=self._output if self._output is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise SidecarError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        if self._output is None:
            self._reader = asyncio.create_task(self._drain_output(), name=f"{self.name}-output")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            if self._proc.returncode is not None:
                await self._finish_reader()
                raise SidecarError(
                    f"{self.name}: exited with code {self._proc.returncode} while starting: {self.last_output()}"
                )
            if await self._ready():
                log.info("sidecar ready", sidecar=self.name, pid=self._proc.pid)
                return
            if loop.time() > deadline:
                await self.stop()
                raise SidecarError(f"{self.name}: not ready after {self._start_timeout:.0f}s")
            await asyncio.sleep(0.2)

    async def wait(self) -> int:
        """Wait for the process to exit (used to notice a sidecar that dies)."""
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await self._finish_reader()

    async def _finish_reader(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _drain_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._tail.append(text[-300:])
                log.debug("sidecar output", sidecar=self.name, line=text[-300:])
