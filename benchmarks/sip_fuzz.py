"""Mutation fuzz of the SIP core and the SDP parser (not a test, not in CI): time-bounded.

    .venv/bin/python benchmarks/sip_fuzz.py --seconds 600

Seeds: the 49 RFC 4475 torture messages (tests/sip/torture) and valid requests of every method the
bot handles. Each case mutates them (byte flips, cuts, lone high bytes, and the hostile classes of
tests/sip/hostile.py: Unicode digits, oversized numbers, display-name quoting, duplicated and
swapped headers) and checks

- the parser contract: ``parse_message`` returns a message or raises ``SipParseError``;
  ``parse_offer`` returns an offer or raises ``SdpError``; nothing else;
- the transaction invariant: a sequence of datagrams, clock advances and application decisions
  (accept, refuse, a non-final code, never) leaves ``internal_errors == 0``, every server
  transaction with a final response as its last answer, none left open after the timers, and
  everything the bot sends parses.

Every case has its own seed; a failure prints it with its reproducer (``--replay SEED:CASE``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bot"), str(ROOT / "tests" / "sip")]

from hostile import mutate  # noqa: E402
from sipmsg import ANSWER, OFFER, request  # noqa: E402

from ivrbot.logs import configure_logging  # noqa: E402
from ivrbot.sdp import SdpError, parse_offer  # noqa: E402
from ivrbot.sip.events import Accept, IncomingCall, IncomingReinvite, Reject  # noqa: E402
from ivrbot.sip.message import SipParseError, SipResponse, parse_message  # noqa: E402
from ivrbot.sip.useragent import UaConfig, UserAgent  # noqa: E402

PEER = ("10.0.0.5", 5060)


def seeds() -> list[bytes]:
    torture = sorted((ROOT / "tests" / "sip" / "torture" / "messages").glob("*.dat"))
    out = [p.read_bytes() for p in torture]
    out += [
        request("INVITE", body=OFFER, extra=["Record-Route: <sip:10.0.0.5;lr>"]),
        request("INVITE", body=OFFER).replace(b'"Alice"', b'"J Rosenberg \\\\\\""'),
        request("INVITE", cseq=2, to_tag="t", body=OFFER),
        request("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0068"),
        request("BYE", cseq=2, to_tag="t"),
        request("CANCEL"),
        request("ACK", to_tag="t"),
        request("INFO", cseq=3, to_tag="t"),
        request("NOTIFY", cseq=4, to_tag="t", body="SIP/2.0 200 OK\r\n", extra=["Event: refer"]),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\nCSeq: 1 BYE\r\n\r\n",
    ]
    return out


def sdp_seeds(messages: list[bytes]) -> list[bytes]:
    bodies = [m.split(b"\r\n\r\n", 1)[1] for m in messages if b"\r\n\r\nv=0" in m]
    return [OFFER.encode(), *bodies]


class Failure(Exception):
    pass


def check_parser(rng: random.Random, pool: list[bytes], stats: Counter[str]) -> None:
    data = mutate(rng.choice(pool), rng)
    try:
        parse_message(data)
        stats["sip_parsed"] += 1
    except SipParseError:
        stats["sip_refused"] += 1
    except Exception as exc:
        raise Failure(f"parse_message raised {type(exc).__name__}: {exc}\nreproducer: {data!r}") from exc


def check_sdp(rng: random.Random, pool: list[bytes], stats: Counter[str]) -> None:
    body = mutate(rng.choice(pool), rng)
    try:
        parse_offer(body)
        stats["sdp_parsed"] += 1
    except SdpError:
        stats["sdp_refused"] += 1
    except Exception as exc:
        raise Failure(f"parse_offer raised {type(exc).__name__}: {exc}\nreproducer: {body!r}") from exc


def check_core(rng: random.Random, pool: list[bytes], stats: Counter[str]) -> None:
    ua = UserAgent(UaConfig("192.0.2.10", 5060))
    now = 0.0
    fed: list[bytes] = []
    pending: list[IncomingCall | IncomingReinvite] = []
    answers: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    tags: list[str] = []  # the bot's To tags of calls it answered: in-dialog requests use them

    def collect() -> None:
        for data, _ in ua.take_datagrams():
            try:
                msg = parse_message(data)
            except SipParseError as exc:
                raise Failure(f"the bot sent what it cannot parse: {data!r}\nafter: {fed!r}") from exc
            if isinstance(msg, SipResponse):
                vias = msg.header_all("Via")
                answers[(msg.header("Call-ID") or "", msg.header("CSeq") or "", vias[0] if vias else "")].append(
                    msg.status
                )
                stats[f"responses_{msg.status // 100}xx"] += 1
                if msg.status == 200 and (msg.header("Call-ID") or "") == "call-1":
                    tag = (msg.header("To") or "").partition(";tag=")[2].split(";")[0]
                    if tag and tag not in tags:
                        tags.append(tag)
        for ev in ua.take_events():
            if isinstance(ev, IncomingCall | IncomingReinvite):
                pending.append(ev)

    for _ in range(rng.randint(1, 10)):
        data = rng.choice(pool)
        if tags and rng.random() < 0.4:
            method = rng.choice(["BYE", "INVITE", "ACK", "INFO", "OPTIONS", "NOTIFY", "CANCEL"])
            data = request(
                method, cseq=rng.randint(1, 5), branch=f"z9hG4bK{rng.randint(0, 3)}", to_tag=rng.choice(tags),
                body=OFFER if method == "INVITE" else "",
            )
        if rng.random() < 0.8:
            data = mutate(data, rng)
        fed.append(data)
        ua.feed(data, PEER, now)
        collect()
        while pending and rng.random() < 0.7:
            ev = pending.pop(rng.randrange(len(pending)))
            answer: Callable[..., bool] = (
                ua.answer_invite if isinstance(ev, IncomingCall) else ua.answer_reinvite
            )
            choice = rng.choice(["accept", "accept", "reject", "odd", "never"])
            if choice == "accept":
                answer(ev.call.call_id, Accept(ANSWER), now)
            elif choice == "reject":
                answer(ev.call.call_id, Reject(rng.choice([486, 488, 503, 603])), now)
            elif choice == "odd":
                answer(ev.call.call_id, Reject(rng.choice([0, 100, 200, 700, 10**6])), now)
            collect()
        now += rng.choice([0.0, 0.1, 0.5, 2.0, 10.0])
        ua.tick(now)
        collect()
    for _ in range(15):  # run every timer out (64*T1 = 32 s)
        now += 10.0
        ua.tick(now)
        collect()
    stats["sequences"] += 1
    stats["datagrams"] += len(fed)
    stats["transactions"] += len(answers)
    problems = []
    if ua.stats.internal_errors:
        problems.append(f"internal_errors={ua.stats.internal_errors}")
    if ua.open_transactions:
        problems.append(f"{ua.open_transactions} server transactions never freed")
    if ua.next_deadline() is not None:
        problems.append("timers still pending after 150 s")
    unfinished = [(k, v) for k, v in answers.items() if v[-1] < 200]
    if unfinished:
        problems.append(f"no final response: {unfinished[:3]}")
    if problems:
        raise Failure("; ".join(problems) + f"\nreproducer (datagrams fed): {fed!r}")


def run_case(seed: str, index: int, pool: list[bytes], sdp_pool: list[bytes], stats: Counter[str]) -> None:
    rng = random.Random(f"{seed}:{index}")
    kind = rng.choice(["parser", "parser", "sdp", "core"])
    if kind == "parser":
        check_parser(rng, pool, stats)
    elif kind == "sdp":
        check_sdp(rng, sdp_pool, stats)
    else:
        check_core(rng, pool, stats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=600.0, help="how long to fuzz (default 600)")
    p.add_argument("--seed", default=None, help="run seed (default: random, printed)")
    p.add_argument("--replay", default=None, help="SEED:CASE: run that one case and show its traceback")
    p.add_argument("--max-failures", type=int, default=20)
    a = p.parse_args(argv)
    configure_logging(level="CRITICAL")
    pool = seeds()
    sdp_pool = sdp_seeds(pool)
    stats: Counter[str] = Counter()
    if a.replay:
        seed, _, index = a.replay.rpartition(":")
        try:
            run_case(seed, int(index), pool, sdp_pool, stats)
        except Failure:
            traceback.print_exc()
            return 1
        print("case passes", dict(stats))
        return 0
    seed = a.seed or f"{random.randrange(2**32):08x}"
    print(f"sip_fuzz: seed {seed}, {a.seconds:.0f} s, {len(pool)} SIP seeds, {len(sdp_pool)} SDP seeds", flush=True)
    failures: list[str] = []
    started = time.monotonic()
    index = 0
    next_report = started + 60
    while time.monotonic() - started < a.seconds and len(failures) < a.max_failures:
        try:
            run_case(seed, index, pool, sdp_pool, stats)
        except Failure as exc:
            failures.append(f"case {seed}:{index}: {exc}")
            print(f"FAILURE case {seed}:{index} (replay: --replay {seed}:{index})\n{exc}\n", flush=True)
        index += 1
        if time.monotonic() >= next_report:
            next_report += 60
            print(f"  {time.monotonic() - started:.0f} s: {index} cases, {len(failures)} failures", flush=True)
    elapsed = time.monotonic() - started
    print(f"cases: {index} in {elapsed:.0f} s ({index / elapsed:.0f}/s)")
    for key in sorted(stats):
        print(f"  {key}: {stats[key]}")
    print(f"failures: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
