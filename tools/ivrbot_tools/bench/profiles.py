"""Caller profiles: when a benchmark caller asks, and what."""

from __future__ import annotations

from dataclasses import dataclass

#: what callers ask (Korean: the only Vosk model installable here is Korean)
QUESTIONS: tuple[str, ...] = (
    "안녕하세요 영업 시간이 어떻게 되나요",  # hello, what are your opening hours?
    "주문한 물건이 언제 도착하나요",  # when will my order arrive?
    "비밀번호를 바꾸고 싶어요",  # I want to change my password
    "매장 위치가 어디인가요",  # where is the shop?
)
DEFAULT_GREETING = "Hello, how can I help?"

class BenchError(RuntimeError):
    """The benchmark could not run (bad arguments, stack failed to start)."""


@dataclass(frozen=True)
class CallerProfile:
    """How a caller behaves around its question; the latency it gets must not depend on this."""

    name: str
    description: str
    #: hear the bot's greeting out (up to 5 s for it to start) before anything else
    wait_greeting: bool = False
    #: silence sent before the (first) question
    silence_before_s: float = 0.0
    #: keep the line open this long, silent, after the reply; then ask again (that turn is measured)
    open_line_s: float = 0.0


PROFILES: dict[str, CallerProfile] = {
    p.name: p
    for p in (
        CallerProfile("greeting", "hears the greeting out, then asks", wait_greeting=True),
        CallerProfile("immediate", "asks right after the answer (RTP from the ACK on)"),
        CallerProfile("pause1.5", "asks after 1.5 s of silence", silence_before_s=1.5),
        CallerProfile("pause5", "asks after 5 s of silence", silence_before_s=5.0),
        CallerProfile("open-line", "asks at once, keeps the line open 5 s after the reply, asks again "
                      "(the second turn is measured)", open_line_s=5.0),
    )
}
DEFAULT_PROFILES: tuple[str, ...] = ("greeting",)

def profile_plan(n_calls: int, profiles: tuple[str, ...], questions: int) -> list[tuple[str, int]]:
    """(profile, question index) of each call of a level: profiles take turns, each walks the questions."""
    if not profiles:
        raise BenchError("at least one caller profile is needed")
    k = len(profiles)
    return [(profiles[i % k], (i // k) % questions) for i in range(n_calls * k)]


# -- a level --------------------------------------------------------------------------------------

def default_greeting(profiles: tuple[str, ...]) -> str:
    """A greeting only when some caller waits for one; otherwise callers who ask at once would barge in on it."""
    return DEFAULT_GREETING if any(PROFILES[n].wait_greeting for n in profiles) else ""
