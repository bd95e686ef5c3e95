"""Running sipp: a scenario from ``scenarios/`` against any SIP target, with its final counts.

Kept apart from conftest.py so other test folders (the end-to-end tests against a real
``ivrbot serve``) run the same scenarios the same way.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCENARIOS = Path(__file__).parent / "scenarios"


class SippTarget(Protocol):
    """Where sipp sends its requests."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def free_udp_port(even: bool = False) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not even or port % 2 == 0:
            return port
    raise RuntimeError("no free port")


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str


def _collect_logs(workdir: Path) -> str:
    """sipp's screen and error logs (then removed, so the next run's counts are its own)."""
    text = ""
    for log in sorted(workdir.glob("*_screen.log")) + sorted(workdir.glob("*_errors.log")):
        text += f"\n--- {log.name}\n" + log.read_text(errors="replace")
        log.unlink()
    return text


async def run_sipp(
    target: SippTarget,
    scenario: str,
    workdir: Path,
    *,
    calls: int = 1,
    limit: int = 1,
    rate: int = 10,
    extra: list[str] | None = None,
    timeout_s: int = 60,
) -> SippResult:
    """Run sipp as a subprocess (the event loop keeps serving SIP) and read its final counts."""
    args = [
        "sipp", f"{target.host}:{target.port}",
        "-sf", str(SCENARIOS / scenario),
        "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True)),
        "-m", str(calls), "-l", str(limit), "-r", str(rate),
        "-timeout", f"{timeout_s}s", "-timeout_error",
        "-nostdin", "-trace_screen", "-trace_err",
        *(extra or []),
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=workdir, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s + 30)
    text = out.decode(errors="replace") + _collect_logs(workdir)

    def count(label: str) -> int:
        m = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return int(m[-1]) if m else -1

    assert proc.returncode is not None
    return SippResult(proc.returncode, count("Successful call"), count("Failed call"), text)
