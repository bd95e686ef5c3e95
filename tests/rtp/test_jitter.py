from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot.rtp.jitter import JitterBuffer, Playout, PlayoutKind


def pl(n: int) -> bytes:
    return n.to_bytes(4, "big")


def run(jb: JitterBuffer, arrivals: list[list[int]], ssrc: int = 1, ticks_after: int = 10) -> list[Playout]:
    """arrivals[i]: sequence numbers arriving before tick i; payload encodes the (unwrapped) number."""
    out = []
    for batch in [*arrivals, *([[]] * ticks_after)]:
        for n in batch:
            jb.push(ssrc, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, pl(n))
        out.append(jb.pop())
    return out


def played(out: list[Playout]) -> list[int]:
    return [int.from_bytes(p.payload, "big") for p in out if p.kind is PlayoutKind.AUDIO]


def test_in_order_stream_plays_in_order_after_priming() -> None:
    jb = JitterBuffer(depth=3)
    out = run(jb, [[i] for i in range(10)])
    assert [p.kind for p in out[:2]] == [PlayoutKind.IDLE] * 2
    assert played(out) == list(range(10))
    assert jb.stats.received == 10 and jb.stats.lost == 0


def test_reordered_and_duplicated_packets_play_once_in_order() -> None:
    jb = JitterBuffer(depth=3)
    arrivals = [[0], [2], [1], [3, 3], [5], [4], [6], [7, 6]]
    assert played(run(jb, arrivals)) == list(range(8))
    assert jb.stats.duplicate == 2


def test_loss_is_reported_once_per_missing_packet_and_late_packet_is_dropped() -> None:
    jb = JitterBuffer(depth=2)
    out = run(jb, [[0], [1], [3], [4], [5], [2], [6]])
    assert played(out) == [0, 1, 3, 4, 5, 6]
    assert [p.kind for p in out].count(PlayoutKind.LOST) == 1
    assert jb.stats.lost == 1 and jb.stats.late == 1


def test_sequence_wrap_around_is_continuous() -> None:
    jb = JitterBuffer(depth=2)
    seqs = list(range(65530, 65542))
    out = run(jb, [[s] for s in seqs])
    assert played(out) == seqs  # payload carries the unwrapped number
    assert jb.stats.lost == 0 and jb.stats.resyncs == 0


def test_ssrc_change_resyncs_to_the_new_stream() -> None:
    jb = JitterBuffer(depth=2)
    run(jb, [[100], [101], [102]], ssrc=1, ticks_after=0)
    out = run(jb, [[7], [8], [9]], ssrc=2)
    assert played(out) == [7, 8, 9]
    assert jb.stats.resyncs == 1 and jb.stats.late == 0


def test_sequence_jump_resyncs_instead_of_waiting_or_counting_thousands_lost() -> None:
    jb = JitterBuffer(depth=2, resync_gap=100)
    out = run(jb, [[1], [2], [3], [5000], [5001], [5002]])
    assert played(out)[-3:] == [5000, 5001, 5002]
    assert jb.stats.resyncs == 1 and jb.stats.lost == 0


def test_pause_underruns_without_losing_the_first_packets_after_it() -> None:
    jb = JitterBuffer(depth=2)
    out = run(jb, [[0], [1], [], [], [], [], [2], [3], [4]])
    assert played(out) == [0, 1, 2, 3, 4]
    assert jb.stats.underruns >= 1 and jb.stats.lost == 0


def test_timestamp_jump_is_counted_but_playout_continues() -> None:
    jb = JitterBuffer(depth=2)
    jb.push(1, 0, 0, pl(0))
    jb.push(1, 1, 160, pl(1))
    jb.push(1, 2, 99999, pl(2))
    out = [jb.pop() for _ in range(5)]
    assert played(out) == [0, 1, 2]
    assert jb.stats.timestamp_jumps == 1


def test_fast_peer_clock_is_trimmed_to_max_depth() -> None:
    jb = JitterBuffer(depth=2, max_depth=4)
    for n in range(10):
        jb.push(1, n, n * 160, pl(n))
    assert jb.buffered == 4 and jb.stats.overflow_dropped == 6
    assert played([jb.pop() for _ in range(6)]) == [6, 7, 8, 9]


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=80),
    st.lists(st.integers(0, 3), min_size=1, max_size=80),
    st.integers(0, 0xFFFF),
)
def test_any_arrival_pattern_plays_each_packet_at_most_once_in_increasing_order(
    order: list[int], batch_sizes: list[int], base: int
) -> None:
    jb = JitterBuffer(depth=3)
    out: list[Playout] = []
    i = 0
    for size in batch_sizes * 3:
        for n in order[i : i + size]:
            jb.push(7, (base + n) & 0xFFFF, 0, pl(n))
        i += size
        out.append(jb.pop())
    out += [jb.pop() for _ in range(100)]
    got = played(out)
    assert got == sorted(set(got))
    assert set(got) <= set(order)
    s = jb.stats
    assert s.received + s.duplicate + s.late == len(order[:i])


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0, 3), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=8)),
            st.none(),  # a playout tick
        ),
        max_size=200,
    )
)
def test_arbitrary_streams_and_ssrc_changes_never_raise(events: list[tuple[int, int, int, bytes] | None]) -> None:
    jb = JitterBuffer(depth=2, max_depth=6, resync_gap=50)
    audio = 0
    for ev in events:
        if ev is None:
            audio += jb.pop().kind is PlayoutKind.AUDIO
        else:
            jb.push(*ev)
        assert jb.buffered <= 6
    assert audio <= jb.stats.received


# -- adaptive depth ------------------------------------------------------------------------------

QUIET = b"\xff" * 160
LOUD = b"\x10" * 160


def body(n: int, quiet: bool) -> bytes:
    """A payload carrying ``n`` (< 512) in three octal digits, made only of quiet or only of loud codes."""
    base = 0xF8 if quiet else 0x00
    digits = bytes(base + (n >> s & 7) for s in (6, 3, 0))
    return digits + (QUIET if quiet else LOUD)


def number(payload: bytes) -> int:
    d = [b & 7 for b in payload[:3]]
    return d[0] << 6 | d[1] << 3 | d[2]


def tick_run(jb: JitterBuffer, arrivals_ms: list[float], quiet_until: int = 0) -> list[int]:
    """Packet n (20 ms each) arrives at arrivals_ms[n]; pop() ticks every 20 ms from t=0 + 1 ms.

    Returns the tick number at which each packet played (played order is checked too).
    """
    events = sorted((t, n) for n, t in enumerate(arrivals_ms))
    played_at: dict[int, int] = {}
    order: list[int] = []
    i = 0
    end = max(arrivals_ms) + 400.0
    tick = 0
    while tick * 20.0 + 1.0 <= end:
        now = tick * 20.0 + 1.0
        while i < len(events) and events[i][0] <= now:
            t, n = events[i]
            jb.push(9, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, body(n, n < quiet_until), arrival=t / 1000.0)
            i += 1
        p = jb.pop()
        if p.kind is PlayoutKind.AUDIO:
            n = number(p.payload)
            order.append(n)
            played_at[n] = tick
        tick += 1
    assert order == sorted(set(order))
    return [played_at.get(n, -1) for n in range(len(arrivals_ms))]


def test_a_clean_path_plays_after_one_tick_a_jittery_one_waits_longer() -> None:
    clean = JitterBuffer(adaptive=True)
    # 2 s of silence (the caller hears the greeting out), then speech
    at = tick_run(clean, [20.0 * n + 0.5 for n in range(200)], quiet_until=100)
    assert clean.jitter_ms < 1.0 and clean.target_depth() == 1 and clean.depth == 1
    assert clean.stats.trimmed == 2 and clean.stats.lost == 0
    # the speech plays on the first tick after each packet arrived: 40 ms sooner than before
    assert [t - n for n, t in enumerate(at)][100:] == [0] * 100
    fixed = JitterBuffer(depth=3)
    at = tick_run(fixed, [20.0 * n + 0.5 for n in range(200)], quiet_until=100)
    assert [t - n for n, t in enumerate(at)] == [2] * 200, "the fixed buffer holds each packet 40 ms longer"

    import random

    rng = random.Random(3)
    jittery = JitterBuffer(adaptive=True)
    # transit varies by 0-30 ms per packet: a one-tick buffer would underrun again and again
    at = tick_run(jittery, [20.0 * n + rng.uniform(0.0, 30.0) for n in range(500)], quiet_until=250)
    assert jittery.jitter_ms > 5.0 and jittery.target_depth() == 3 and jittery.depth == 3
    assert sum(t < 0 for t in at) <= 5, "deep enough: packets arrive in time to play"


def test_reordered_speech_deepens_a_one_tick_buffer_at_once() -> None:
    jb = JitterBuffer(adaptive=True)
    arrivals = [20.0 * n + 0.5 for n in range(300)]
    for k in (150, 200):  # speech: k + 1 arrives before k, twice
        arrivals[k], arrivals[k + 1] = arrivals[k + 1], arrivals[k]
    at = tick_run(jb, arrivals, quiet_until=100)
    assert [t - n for n, t in enumerate(at)][100:150] == [0] * 50, "one tick deep before the swap"
    # the early packet's transit jump raises the jitter estimate: one tick of silence, and the
    # late one still plays in order; the reorder then holds the depth at 2
    assert all(t >= 0 for t in at[100:]) and jb.stats.late == 0 and jb.stats.lost == 0
    assert jb.stats.stretched == 1 and jb.depth == 2 and jb.target_depth() == 2

def test_the_fixed_buffer_is_what_it_was_when_not_adaptive() -> None:
    jb = JitterBuffer(depth=3)
    for n in range(10):
        jb.push(1, n, n * 160, pl(n), arrival=n * 0.5)  # wild arrival times change nothing
    assert jb.jitter == 0.0 and jb.target_depth() == 3


def test_the_depth_shrinks_only_by_dropping_silence() -> None:
    jb = JitterBuffer(depth=3, adaptive=True)
    # a burst left three packets too many; the path is clean afterwards
    for n in range(6):
        jb.push(1, n, n * 160, LOUD, arrival=0.0)
    for n in range(6, 200):
        jb.push(1, n, n * 160, LOUD, arrival=(n - 5) * 0.02)
        jb.pop()
    assert jb.stats.trimmed == 0, "speech is never dropped to shrink the buffer"
    for n in range(200, 400):
        jb.push(1, n, n * 160, QUIET, arrival=(n - 5) * 0.02)
        jb.pop()
    assert jb.stats.trimmed >= 1 and jb.buffered <= jb.target_depth() + 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 80.0), min_size=1, max_size=300),  # extra transit delay per packet, ms
    st.lists(st.integers(0, 299), max_size=20),  # packets lost
    st.lists(st.booleans(), max_size=300),  # quiet or loud payload
)
def test_adaptive_depth_stays_in_bounds_and_plays_each_packet_once_in_order(
    delays: list[float], lost: list[int], quiet: list[bool]
) -> None:
    jb = JitterBuffer(adaptive=True, max_depth=10)
    arrivals = {n: 20.0 * n + d for n, d in enumerate(delays) if n not in set(lost)}
    events = sorted((t, n) for n, t in arrivals.items())
    seen: list[int] = []
    i, tick = 0, 0
    while i < len(events) or jb.buffered:
        now = tick * 20.0 + 1.0
        while i < len(events) and events[i][0] <= now:
            t, n = events[i]
            jb.push(5, n, n * 160, body(n, n < len(quiet) and quiet[n]), arrival=t / 1000.0)
            i += 1
        p = jb.pop()
        assert 1 <= jb.depth <= 3 and 1 <= jb.target_depth() <= 3
        assert jb.buffered <= 10
        if p.kind is PlayoutKind.AUDIO:
            seen.append(number(p.payload))
        tick += 1
        assert tick < 10_000
    assert seen == sorted(set(seen)), "in order, none twice"
    assert set(seen) <= set(arrivals)
    s = jb.stats
    assert len(seen) + s.late + s.duplicate + s.overflow_dropped + s.trimmed + jb.buffered == len(arrivals)
