"""The real Vosk and Piper servers, each started once per test session on a free port.

Each server runs its own event loop in a background thread, so the model loads once while every
test talks to it over a real loopback WebSocket from its own event loop.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from ivrbot_sidecars.models import piper_voice_path, vosk_model_path
from ivrbot_sidecars.piper_server import PiperServer
from ivrbot_sidecars.vosk_server import VoskServer


class _Server(Protocol):
    port: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class ThreadedServer[S: _Server]:
    """Runs ``server.start()`` in a thread's own loop; ``close()`` runs ``server.stop()`` there."""

    def __init__(self, make: Callable[[], S]) -> None:
        self.server: S | None = None
        self._make = make
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.server = self._make()
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def open(self) -> S:
        self._thread.start()
        self._ready.wait(300)
        if self._error is not None or self.server is None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self.server

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's loop (for state only that loop may touch)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)


@pytest.fixture(scope="session")
def vosk_server() -> Iterator[VoskServer]:
    runner = ThreadedServer(lambda: VoskServer(vosk_model_path(), "127.0.0.1", 0, sample_rate=16000, workers=2))
    server = runner.open()
    yield server
    runner.close()


@pytest.fixture(scope="session")
def piper_server() -> Iterator[PiperServer]:
    runner = ThreadedServer(lambda: PiperServer(piper_voice_path(), "127.0.0.1", 0, workers=2))
    server = runner.open()
    yield server
    runner.close()


@pytest.fixture
def vosk_url(vosk_server: VoskServer) -> str:
    return f"ws://127.0.0.1:{vosk_server.port}"


@pytest.fixture
def piper_url(piper_server: PiperServer) -> str:
    return f"ws://127.0.0.1:{piper_server.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(module: str, port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m module`` on ``port``, returned once it listens (as in a pod: its own process)."""
    with open(log, "wb") as out:  # a file, not a pipe nobody reads: a full pipe would block the server
        proc = subprocess.Popen([sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # a generous bound on start-up, not a timing assertion
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{module} did not listen on {port}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def piper_process(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Piper server in its own process, so its memory can be measured: (url, pid)."""
    port = free_port()
    proc = spawn_server("ivrbot_sidecars.piper_server", port, tmp_path / "piper.log",
                        "--voice", str(piper_voice_path()), "--workers", "1")
    try:
        yield f"ws://127.0.0.1:{port}", proc.pid
    finally:
        stop_server(proc)


@pytest.fixture
def vosk_process(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Vosk server in its own process, as in a pod: a Kaldi abort kills it, not the test run."""
    port = free_port()
    proc = spawn_server("ivrbot_sidecars.vosk_server", port, tmp_path / "vosk.log",
                        "--model", str(vosk_model_path()), "--sample-rate", "16000", "--workers", "2")
    try:
        yield f"ws://127.0.0.1:{port}", proc
    finally:
        stop_server(proc)
