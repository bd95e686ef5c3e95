"""The call deploy/kind/up.sh places (deploy/kind/call.xml, same sipp options) works against a real
`ivrbot serve --echo` on loopback: the part of the kind journey that can run on this machine."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ivrbot_tools.local import LocalBot, LocalBotConfig

ROOT = Path(__file__).resolve().parents[2]


def _error_logs(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in directory.glob("*_errors.log"))


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed")
async def test_up_sh_call_scenario_completes_against_a_real_bot(tmp_path: Path) -> None:
    up = await asyncio.to_thread((ROOT / "deploy" / "kind" / "up.sh").read_text)
    assert 'sipp -sf "$ROOT/deploy/kind/call.xml" -m 1 -l 1 -d 10000 -rtp_echo' in up
    async with LocalBot(LocalBotConfig(log_path=tmp_path / "bot.log", echo=True, max_calls=2, rtp_ports=8)) as bot:
        host, port = bot.sip_target
        proc = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(ROOT / "deploy" / "kind" / "call.xml"), "-m", "1", "-l", "1", "-d", "1000",
            "-rtp_echo", "-timeout", "30", "-timeout_error", "-i", "127.0.0.1", "-p", "0",
            "-mp", "0", "-nostdin", "-trace_err", f"{host}:{port}",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await proc.communicate()
        errors = await asyncio.to_thread(_error_logs, tmp_path)
        assert proc.returncode == 0, f"sipp failed ({proc.returncode}): {err.decode()[-2000:]} {errors[-2000:]}"
