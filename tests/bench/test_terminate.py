"""SIGTERM to a developer tool stops the servers it started (they run in their own sessions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

TOOL = textwrap.dedent("""
    import asyncio, sys
    from ivrbot_sidecars.process import ManagedProcess
    from ivrbot_tools import terminate

    async def ready() -> bool:
        return True

    async def main() -> None:
        child = ManagedProcess("sleeper", ["sleep", "600"], ready)
        await child.start()
        try:
            print("PID", child.pid, flush=True)
            await asyncio.sleep(600)
        finally:
            await child.stop()

    try:
        terminate.run(main())
    except terminate.Terminated:
        sys.exit(terminate.Terminated.exit_code)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_children_before_the_tool_exits() -> None:
    tool = subprocess.Popen([sys.executable, "-c", TOOL], stdout=subprocess.PIPE, text=True)
    try:
        assert tool.stdout is not None
        line = ""
        while not line.startswith("PID "):  # the tool's log lines come first
            line = tool.stdout.readline()
            assert line, "the tool exited before starting its child"
        child = int(line.split()[1])
        assert _alive(child)
        tool.send_signal(signal.SIGTERM)
        assert tool.wait(timeout=30) == 143
        # the child was stopped (and reaped) before the tool exited; allow a moment for slow reaping
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the tool's child outlived it"
    finally:
        if tool.poll() is None:
            tool.kill()
