"""`ivrbot serve` refuses to start with one clear line, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ivrbot_tools.local import free_port


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "IVRBOT_SIP_HOST": "127.0.0.1", "IVRBOT_HTTP_HOST": "127.0.0.1", **env}
    return subprocess.run(
        [sys.executable, "-m", "ivrbot", "serve", "--echo"], env=full, capture_output=True, text=True, timeout=60
    )


def test_sip_port_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = serve({"IVRBOT_SIP_PORT": str(port), "IVRBOT_HTTP_PORT": str(free_port())})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == f"ivrbot serve: SIP port udp 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in out.stderr


def test_bad_setting_names_the_key() -> None:
    out = serve({"IVRBOT_RTP_PORT_MIN": "30000", "IVRBOT_RTP_PORT_MAX": "20000"})
    assert out.returncode == 2
    assert "configuration error: rtp_port_max" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_latency_budget_is_refused_at_start() -> None:
    out = serve({"IVRBOT_BUDGET_TOTAL_MS": "soon"})
    assert out.returncode == 2
    assert "IVRBOT_BUDGET_TOTAL_MS" in out.stderr
