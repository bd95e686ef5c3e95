"""The servers as the stack and the sidecar images run them: ``python -m ...`` processes with flags."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from ivrbot_sidecars.models import piper_voice_path, vosk_model_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, "--host", "127.0.0.1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_listening(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 120  # a generous bound on start-up, not a timing assertion
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not listen")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.slow
async def test_vosk_server_main_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = spawn("ivrbot_sidecars.vosk_server", "--port", str(port), "--model", str(vosk_model_path()))
    try:
        await asyncio.to_thread(wait_listening, proc, port)
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            await ws.send(bytes(3200))
            assert json.loads(await ws.recv()) == {"partial": ""}
            await ws.send('{"eof" : 1}')
            assert json.loads(await ws.recv()) == {"text": ""}
    finally:
        rc = stop(proc)
    assert rc == 0
    assert "vosk model loaded" in proc.communicate()[1]


@pytest.mark.slow
async def test_piper_server_main_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = spawn("ivrbot_sidecars.piper_server", "--port", str(port), "--voice", str(piper_voice_path()))
    try:
        await asyncio.to_thread(wait_listening, proc, port)
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            assert json.loads(await ws.recv()) == {"type": "ready", "sample_rate": 22050}
            await ws.send(json.dumps({"type": "speak", "id": 1, "text": "Hi."}))
            assert json.loads(await ws.recv()) == {"type": "audio_start", "id": 1}
            assert isinstance(await ws.recv(), bytes)
    finally:
        rc = stop(proc)
    assert rc == 0


@pytest.mark.parametrize(("module", "flag", "server"), [
    ("ivrbot_sidecars.vosk_server", "--model", "vosk-server"),
    ("ivrbot_sidecars.piper_server", "--voice", "piper-server"),
])
def test_missing_model_is_one_clear_line_naming_server_and_path(
    tmp_path: Path, module: str, flag: str, server: str
) -> None:
    missing = tmp_path / "no-such-model"
    proc = spawn(module, "--port", str(free_port()), flag, str(missing))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {server}:") and str(missing) in lines[-1]
    assert "Traceback" not in err


@pytest.mark.slow
def test_port_taken_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn("ivrbot_sidecars.piper_server", "--port", str(port), "--voice", str(piper_voice_path()))
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.splitlines()[-1].startswith(f"error: piper-server: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in err
