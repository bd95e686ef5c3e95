"""`ivrbot bench` is a benchmark, not a test: here it runs once, small, and its outputs are checked.

The slow test starts the real stack and places two real calls; nothing asserts on how long
anything took (shared machine), only that every output exists with the structure the docs use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from ivrbot_tools.bench import (
    PROFILES,
    STAGES,
    build_parser,
    default_greeting,
    level_holds,
    main,
    markdown_table,
    max_concurrency_within,
    parse_levels,
    parse_profiles,
    parse_target,
    profile_plan,
    stages_from_log,
    summarize,
)


def _level(c: int, p95: float | None, failed: int = 0) -> dict[str, object]:
    return {"concurrency": c, "failed": failed, "caller_latency_ms": {"p95": p95}}


def test_summary_percentiles() -> None:
    s = summarize([100.0, 200.0, 300.0, 400.0, 500.0])
    assert s == {"n": 5, "p50": 300.0, "p95": 480.0, "max": 500.0, "mean": 300.0}
    assert summarize([]) == {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}


def test_highest_concurrency_within_target() -> None:
    levels = [_level(1, 900.0), _level(2, 1400.0), _level(4, 1600.0), _level(8, 3000.0)]
    assert max_concurrency_within(levels) == 2
    assert not level_holds(_level(1, 900.0, failed=1)), "a call without a reply breaks the level"
    assert max_concurrency_within([_level(1, None), _level(2, 2000.0)]) is None


def test_arguments_are_checked() -> None:
    assert parse_target("10.0.0.5:5060") == ("10.0.0.5", 5060)
    assert parse_levels("1, 2,4") == (1, 2, 4)
    for bad in ("5060", "host:", "host:99999"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_target(bad)
    for bad in ("", "1,x", "0,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_levels(bad)
    args = build_parser().parse_args([])
    assert args.levels == (1, 2, 4, 8) and args.target is None and args.out == Path("docs/bench")


def test_caller_profiles_are_chosen_by_name_and_take_turns() -> None:
    args = build_parser().parse_args(["--profiles", "immediate, pause1.5,pause5,open-line,immediate"])
    assert args.profiles == ("immediate", "pause1.5", "pause5", "open-line")
    assert build_parser().parse_args([]).profiles == ("greeting",)
    for bad in ("", "immediate,nope", "greetings"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_profiles(bad)
    # each profile gets the level's call count and walks the questions
    plan = profile_plan(3, ("greeting", "immediate"), questions=2)
    assert plan == [("greeting", 0), ("immediate", 0), ("greeting", 1), ("immediate", 1),
                    ("greeting", 0), ("immediate", 0)]
    assert PROFILES["pause5"].silence_before_s == 5.0 and not PROFILES["pause5"].wait_greeting
    assert PROFILES["open-line"].open_line_s > 0
    # the bot greets only when some caller waits for it
    assert default_greeting(("immediate", "pause1.5")) == ""
    assert default_greeting(("immediate", "greeting")) != ""


def test_the_table_breaks_latency_down_by_profile() -> None:
    def summary(p50: float) -> dict[str, float | int | None]:
        return {"n": 2, "p50": p50, "p95": p50, "max": p50, "mean": p50}

    level = {
        "concurrency": 1, "ok": 4, "calls": 4, "failed": 0, "caller_latency_ms": summary(1000.0),
        "stages_ms": {}, "loadavg_start": [0.5], "loadavg_end": [0.7], "holds_target": True, "resources": {},
        "profiles": {"greeting": {"calls": 2, "caller_latency_ms": summary(900.0), "vad_to_stt_ms": summary(90.0)},
                     "pause5": {"calls": 2, "caller_latency_ms": summary(1100.0), "vad_to_stt_ms": summary(95.0)}},
    }
    table = markdown_table({"levels": [level], "max_concurrency_within_target": 1})
    assert "| 1 | greeting | 2/2 | 900 | 900 | 900 | 90 | 90 |" in table
    assert "| 1 | pause5 | 2/2 | 1100 |" in table


def test_stage_times_fall_back_to_the_turn_log_line() -> None:
    events: list[dict[str, Any]] = [
        {"event": "caller said", "text": "x"},
        {"event": "turn latency", "vad_to_stt_ms": 90.0, "stt_to_llm_ms": 300.0, "llm_to_tts_ms": 200.0,
         "tts_to_rtp_ms": 10.0, "total_ms": 600.0},
    ]
    stages, total = stages_from_log(events)
    assert stages == {"vad_to_stt": 90.0, "stt_to_llm": 300.0, "llm_to_tts": 200.0, "tts_to_rtp": 10.0}
    assert total == 600.0
    assert stages_from_log([{"event": "call ended"}]) == ({}, None)


@pytest.mark.slow
def test_bench_runs_real_calls_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    rc = main(["--levels", "1", "--calls-per-level", "1", "--profiles", "greeting,pause1.5", "--out", str(out)])
    assert rc == 0, "every level must have at least one answered call"

    doc = json.loads((out / "latency.json").read_text(encoding="utf-8"))
    for key in ("command", "started_at", "machine", "config", "levels", "calls", "max_concurrency_within_target"):
        assert key in doc
    assert doc["command"].startswith("ivrbot bench --levels 1")
    assert len(doc["machine"]["loadavg_start"]) == 3
    [level] = doc["levels"]
    assert level["concurrency"] == 1 and level["calls"] == 2 and level["ok"] >= 1
    assert level["caller_latency_ms"]["n"] == level["ok"]
    assert set(level["profiles"]) == {"greeting", "pause1.5"}
    assert all(pr["calls"] == 1 for pr in level["profiles"].values())
    assert {c["profile"] for c in doc["calls"]} == {"greeting", "pause1.5"}
    for key in ("p50", "p95", "max"):
        assert level["caller_latency_ms"][key] > 0
    # stage times come from the bot's OTLP spans, received by the benchmark itself
    assert level["stage_sources"] == ["spans"]
    for stage in (*STAGES, "total", "pre_vad"):
        assert level["stages_ms"][stage]["n"] >= 1
    assert set(level["resources"]) == {"bot", "vosk", "piper", "llama"}
    for r in level["resources"].values():
        assert r["cpu_s"] >= 0 and r["peak_rss_mb"] > 10
    calls = doc["calls"]
    assert len(calls) == 2 and len({c["call_id"] for c in calls}) == 2
    assert all(c["call_id"].endswith("@ivrbot-caller") for c in calls)

    image = matplotlib.image.imread(out / "latency.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400

    table = (out / "latency.md").read_text(encoding="utf-8")
    assert table == (table.split("\n", 2)[0] + "\n\n" + markdown_table(doc))
    rows = [line for line in table.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 4, "one latency row, one row per caller profile and one resource row for concurrency 1"
    assert any(r.startswith("| 1 | greeting | 1/1 |") for r in rows)


def test_the_chart_is_drawn_when_no_call_was_answered(tmp_path: Path) -> None:
    """A level whose calls all failed is a result to report, not a crash of the report (log-scaled x)."""
    from ivrbot_tools.bench.report import write_chart

    none = {"p50": None, "p95": None, "max": None, "n": 0}
    doc = {
        "started_at": "2026-12-03T20:00:00+00:00",
        "machine": {"loadavg_start": [11.9, 12.8, 9.8]},
        "levels": [{"concurrency": c, "ok": 0, "calls": 2, "failed": 2, "caller_latency_ms": dict(none),
                    "stages_ms": {s: dict(none) for s in (*STAGES, "total", "pre_vad")}} for c in (1, 2)],
    }
    write_chart(doc, tmp_path / "latency.png")
    image = matplotlib.image.imread(tmp_path / "latency.png")
    assert image.ndim == 3 and image.shape[1] > 400
