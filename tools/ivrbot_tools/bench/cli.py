"""`ivrbot bench` arguments."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ivrbot_tools import terminate
from ivrbot_tools.bench.profiles import DEFAULT_GREETING, DEFAULT_PROFILES, PROFILES, default_greeting
from ivrbot_tools.bench.report import markdown_table, write_outputs
from ivrbot_tools.bench.run import DEFAULT_LEVELS, DEFAULT_OUT, BenchConfig, run_bench, say

DESCRIPTION = "`ivrbot bench`: end-of-question to first-reply latency under load, measured with real calls."


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError(f"levels must be positive integers, got {text!r}")
    return levels


def parse_watch(text: str) -> tuple[str, int]:
    name, sep, pid = text.partition("=")
    if not sep or not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def parse_profiles(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in PROFILES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown caller profile(s) {', '.join(unknown) or text!r}; choose from {', '.join(PROFILES)}"
        )
    return tuple(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ivrbot bench", description=DESCRIPTION)
    p.add_argument("--target", type=parse_target, help="HOST:PORT of a running bot (default: start the local stack)")
    p.add_argument("--levels", type=parse_levels, default=DEFAULT_LEVELS, help="concurrency levels, e.g. 1,2,4,8")
    p.add_argument("--calls-per-level", type=int, default=5,
                   help="calls per level and caller profile (at least the concurrency)")
    p.add_argument("--profiles", type=parse_profiles, default=DEFAULT_PROFILES,
                   help="caller profiles, taking turns within each level: "
                        + "; ".join(f"{q.name}: {q.description}" for q in PROFILES.values()))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where latency.json/.png/.md go")
    p.add_argument("--greeting", default=None,
                   help=f"the local bot's greeting ('' for none; default {DEFAULT_GREETING!r} when a profile "
                        "waits for it, else none)")
    p.add_argument("--reply-timeout", type=float, default=20.0, help="seconds to wait for a reply")
    p.add_argument("--stagger", type=float, default=1.0, help="callers start jittered over this many seconds")
    p.add_argument("--watch", type=parse_watch, action="append", default=[],
                   help="NAME=PID of another process to measure (with --target)")
    return p

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls_per_level < 1:
        print("ivrbot bench: --calls-per-level must be at least 1", file=sys.stderr)
        return 2
    config = BenchConfig(
        levels=args.levels,
        calls_per_level=args.calls_per_level,
        target=args.target,
        out=args.out,
        greeting=default_greeting(args.profiles) if args.greeting is None else args.greeting,
        profiles=args.profiles,
        reply_timeout=args.reply_timeout,
        stagger=args.stagger,
        watch=dict(args.watch),
        command=shlex.join(["ivrbot", "bench", *(sys.argv[1:] if argv is None else argv)]),
    )
    try:
        doc = terminate.run(run_bench(config))
    except KeyboardInterrupt:
        return 130
    except terminate.Terminated:
        return terminate.Terminated.exit_code
    except Exception as exc:
        print(f"ivrbot bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    paths = write_outputs(doc, config.out)
    say(markdown_table(doc))
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if all(lv["ok"] > 0 for lv in doc["levels"]) else 1
