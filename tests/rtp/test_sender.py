import random

from ivrbot.rtp.packet import parse_rtp
from ivrbot.rtp.sender import Pacer, RtpPacketizer


def test_sequence_and_timestamp_are_continuous_across_spurts_and_wrap() -> None:
    p = RtpPacketizer(ssrc=5, sequence=65534, timestamp=0xFFFFFF00)
    raw = [p.silence(), p.audio(b"\x01" * 160), p.audio(b"\x02" * 160), p.silence(), p.audio(b"\x03" * 160)]
    pkts = [parse_rtp(r) for r in raw]
    assert [k.sequence for k in pkts] == [65534, 65535, 0, 1, 2]
    assert [k.timestamp for k in pkts] == [(0xFFFFFF00 + 160 * i) & 0xFFFFFFFF for i in range(5)]
    assert [k.marker for k in pkts] == [False, True, False, False, True]
    assert pkts[0].payload == b"\xff" * 160 and {k.ssrc for k in pkts} == {5}


def test_hold_advances_time_but_not_sequence() -> None:
    p = RtpPacketizer(sequence=10, timestamp=0)
    p.silence()
    p.skip()
    p.skip()
    pkt = parse_rtp(p.audio(b"\x00" * 160))
    assert (pkt.sequence, pkt.timestamp, pkt.marker) == (11, 480, True)


def test_random_initial_values() -> None:
    a, b = RtpPacketizer(), RtpPacketizer()
    assert (a.ssrc, a.sequence, a.timestamp) != (b.ssrc, b.sequence, b.timestamp)


def test_pacer_deadlines_do_not_drift_with_late_wakeups() -> None:
    rng = random.Random(3)
    pacer = Pacer(start=100.0)
    now = 100.0
    for _ in range(3000 * 50):  # 50 minutes of 20 ms ticks
        deadline = pacer.next_deadline(now)
        now = max(now, deadline) + rng.uniform(0, 0.004)  # sleep overshoot up to 4 ms
    assert abs(deadline - (100.0 + 150000 * 0.02)) < 1e-6
    assert pacer.reanchors == 0


def test_pacer_reanchors_after_a_long_stall_instead_of_bursting() -> None:
    pacer = Pacer(start=0.0, max_lag=5)
    pacer.next_deadline(0.0)
    d = pacer.next_deadline(1.0)  # loop stalled a second
    assert d == 1.0 and pacer.reanchors == 1
    assert pacer.next_deadline(1.0) == 1.02
