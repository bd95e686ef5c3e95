"""TurnTimeline, the sans-IO core of the turn model: properties over arbitrary moment sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivrbot.telemetry.budget import STAGES, TOTAL, LatencyBudget
from ivrbot.telemetry.timeline import MOMENTS, RTP_FIRST_PACKET, STT_FINAL, VAD_STOP, TurnTimeline

gaps = st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=5, max_size=5)


@given(gaps)
def test_complete_turn_stages_add_up_to_total(g: list[float]) -> None:
    tl = TurnTimeline(1)
    t = 100.0
    for moment, gap in zip(MOMENTS, g, strict=True):
        t += gap
        assert tl.mark(moment, t)
    d = tl.durations()
    assert tl.complete
    assert sum(d[s] for s in STAGES) == pytest.approx(d[TOTAL])
    budget = LatencyBudget()
    for over in tl.overruns(budget):
        limit = budget.limit(over.stage)
        assert limit is not None and over.duration_s > limit and over.over_ms > 0


@given(st.lists(st.tuples(st.sampled_from(MOMENTS), st.floats(0, 1000, allow_nan=False)), max_size=20))
def test_marks_keep_order_whatever_arrives(events: list[tuple[str, float]]) -> None:
    tl = TurnTimeline(1)
    for moment, t in events:
        before = dict(tl.moments)
        if tl.mark(moment, t):
            assert moment not in before
        else:
            assert tl.moments == before
    kept = list(tl.moments)
    assert kept == list(MOMENTS[: len(kept)])  # a prefix of the pipeline order
    times = list(tl.moments.values())
    assert times == sorted(times)
    assert all(v >= 0 for v in tl.durations().values())


def test_unknown_names_are_errors() -> None:
    with pytest.raises(KeyError):
        TurnTimeline(1).mark("llm_done", 1.0)
    with pytest.raises(KeyError):
        LatencyBudget().limit("nope")
    tl = TurnTimeline(1)
    assert not tl.mark(STT_FINAL, 1.0)  # nothing before the VAD stop
    assert tl.mark(VAD_STOP, 1.0) and not tl.mark(RTP_FIRST_PACKET, 2.0)
