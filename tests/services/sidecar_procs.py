"""The three real sidecars as child processes for the service and assistant tests.

Each runs as its own process, as in a pod, so a test can kill one mid-call and start it again on
the same port. Ports are free ephemeral ports picked at fixture time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ivrbot_sidecars.models import llama_model_path, llama_server_bin, piper_voice_path, vosk_model_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return int(r.status) == 200
    except Exception:
        return False


class SidecarProcess:
    """A sidecar child process on a fixed port; start() waits for readiness, stop() kills the group."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, *, health_url: str = "") -> None:
        self.name, self.argv, self.port = name, argv, port
        self.health_url = health_url
        self.log_path = log_dir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def ready(self) -> bool:
        return _http_ok(self.health_url) if self.health_url else _tcp_open(self.port)

    def start(self, timeout: float = 180.0) -> None:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready in {timeout}s")
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    async def astart(self, timeout: float = 180.0) -> None:
        """start() off the event loop, so a live call keeps running while the sidecar loads."""
        await asyncio.to_thread(self.start, timeout)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _py_main(module: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


def vosk_process(log_dir: Path, port: int | None = None) -> SidecarProcess:
    port = port or free_port()
    argv = [*_py_main("ivrbot_sidecars.vosk_server"), "--host", "127.0.0.1", "--port", str(port),
            "--model", str(vosk_model_path()), "--workers", "1"]
    return SidecarProcess("vosk", argv, port, log_dir)


def piper_process(log_dir: Path, port: int | None = None) -> SidecarProcess:
    port = port or free_port()
    argv = [*_py_main("ivrbot_sidecars.piper_server"), "--host", "127.0.0.1", "--port", str(port),
            "--voice", str(piper_voice_path()), "--workers", "1", "--frame-ms", "40"]
    return SidecarProcess("piper", argv, port, log_dir)


def llama_process(log_dir: Path, port: int | None = None) -> SidecarProcess:
    port = port or free_port()
    argv = [str(llama_server_bin()), "--host", "127.0.0.1", "--port", str(port), "-m", str(llama_model_path()),
            "--ctx-size", "2048", "--parallel", "2", "--threads", "1", "--no-webui"]
    return SidecarProcess("llama", argv, port, log_dir, health_url=f"http://127.0.0.1:{port}/health")
