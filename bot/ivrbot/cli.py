"""The `ivrbot` command: one subcommand per job, each module owning its own arguments.

The subcommands are named here as module strings and imported only when run, so the bot has no
import edge to the developer tools or the sidecars, and an image installed with one extra only
says which extra a command needs instead of failing with a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple


class Subcommand(NamedTuple):
    module: str
    func: str
    extra: str  #: the pyproject extra that installs what the module imports
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "stack": Subcommand("ivrbot_tools.stack_cli", "main", "dev", "run Vosk, Piper and llama-server on loopback"),
    "serve": Subcommand("ivrbot.server", "main", "bot", "run the bot: SIP endpoint + one pipeline per call"),
    "demo": Subcommand(
        "ivrbot_tools.demo", "main", "dev", "start the stack and the bot, place a real call, print latency"
    ),
    "bench": Subcommand("ivrbot_tools.bench", "main", "dev", "latency benchmark: real calls at several concurrencies"),
    "vosk-server": Subcommand(
        "ivrbot_sidecars.vosk_server", "main", "sidecars", "the vosk-server compatible ASR WebSocket server"
    ),
    "piper-server": Subcommand("ivrbot_sidecars.piper_server", "main", "sidecars", "the Piper TTS WebSocket server"),
}


def _usage() -> str:
    lines = ["usage: ivrbot <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {sub.help}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


def load(name: str) -> Callable[[list[str]], int]:
    """The entry function of subcommand `name`; ModuleNotFoundError when its extra is not installed."""
    sub = SUBCOMMANDS[name]
    entry: Callable[[list[str]], int] = getattr(importlib.import_module(sub.module), sub.func)
    if sub.extra != "sidecars":  # the sidecars set up their own logging and carry no bot code
        from ivrbot.logs import configure_logging

        configure_logging()
    return entry


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"ivrbot: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        entry = load(name)
    except ModuleNotFoundError as exc:
        extra = SUBCOMMANDS[name].extra
        print(
            f"ivrbot {name}: needs the [{extra}] extra, which is not installed here "
            f"(missing module {exc.name!r}; install it with: pip install 'ivrbot[{extra}]')",
            file=sys.stderr,
        )
        return 1
    return int(entry(rest) or 0)
