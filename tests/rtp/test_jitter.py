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
