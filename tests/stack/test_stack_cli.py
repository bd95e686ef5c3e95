"""`ivrbot stack` as a user runs it: real servers, a sample request each, clear one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from ivrbot_tools.local import free_port

pytestmark = pytest.mark.slow


def stack_cmd(*extra: str, ports: tuple[int, int, int] | None = None) -> list[str]:
    v, p, ll = ports or (free_port(), free_port(), free_port())
    return [
        sys.executable,
        "-m",
        "ivrbot",
        "stack",
        "--vosk-port",
        str(v),
        "--piper-port",
        str(p),
        "--llama-port",
        str(ll),
        *extra,
    ]


def test_check_answers_a_sample_request_on_each_server() -> None:
    out = subprocess.run(stack_cmd("--check"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "vosk   : spoke" in out.stdout and "transcript ''" not in out.stdout
    assert "piper  :" in out.stdout and "at 22050 Hz" in out.stdout
    assert "llama  :" in out.stdout
    assert "stack check: ok" in out.stdout


def test_taken_port_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        out = subprocess.run(
            stack_cmd(ports=(free_port(), taken, free_port())), capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: piper-server: port 127.0.0.1:{taken} is already in use"]
    assert "Traceback" not in out.stderr


def test_missing_model_is_one_clear_line(tmp_path: object) -> None:
    env = {**os.environ, "VOSK_MODEL_PATH": "/nonexistent/vosk-model"}
    out = subprocess.run(stack_cmd(), capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1
    assert "vosk-server" in out.stderr and "/nonexistent/vosk-model" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_server_that_dies_is_named_and_the_rest_stop() -> None:
    proc = subprocess.Popen(stack_cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "stack is up" in line or not line:
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        piper = [c for c in children if "piper-server" in " ".join(c.cmdline())]
        assert piper, "piper-server child not found"
        piper[0].send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert any(line.startswith("error: piper-server exited") for line in err.splitlines()), err[-1500:]
    for c in children:
        assert not c.is_running() or c.status() == psutil.STATUS_ZOMBIE
