"""The benchmark's outputs: latency.json, the Markdown table and the chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ivrbot_tools.bench.results import STAGES, TARGET_P95_MS


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The latency table and the resource table, as Markdown."""
    lines = [
        "| concurrency | calls ok/all | p50 ms | p95 ms | max ms | VAD→STT p50 | STT→LLM p50 | LLM→TTS p50 "
        "| TTS→RTP p50 | bot total p50 | last word→VAD stop p50 | load avg (1 min) | p95 ≤ 1.5 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for lv in doc["levels"]:
        cl, st = lv["caller_latency_ms"], lv["stages_ms"]
        lines.append(
            f"| {lv['concurrency']} | {lv['ok']}/{lv['calls']} | {_fmt(cl['p50'])} | {_fmt(cl['p95'])} "
            f"| {_fmt(cl['max'])} | "
            + " | ".join(_fmt(st.get(s, {}).get("p50")) for s in (*STAGES, "total", "pre_vad"))
            + f" | {lv['loadavg_start'][0]:.2f}→{lv['loadavg_end'][0]:.2f} | {'yes' if lv['holds_target'] else 'no'} |"
        )
    best = doc["max_concurrency_within_target"]
    lines += ["", f"Highest concurrency with p95 within 1.5 s: **{best if best is not None else 'none'}**", ""]
    if any(len(lv.get("profiles", {})) > 1 for lv in doc["levels"]):
        lines += [
            "| concurrency | caller profile | calls ok/all | p50 ms | p95 ms | max ms | VAD→STT p50 | VAD→STT max |",
            "|---:|:---|---:|---:|---:|---:|---:|---:|",
        ]
        for lv in doc["levels"]:
            for name, pr in lv.get("profiles", {}).items():
                cl, vs = pr["caller_latency_ms"], pr["vad_to_stt_ms"]
                lines.append(
                    f"| {lv['concurrency']} | {name} | {cl['n']}/{pr['calls']} | {_fmt(cl['p50'])} | {_fmt(cl['p95'])} "
                    f"| {_fmt(cl['max'])} | {_fmt(vs['p50'])} | {_fmt(vs['max'])} |"
                )
        lines.append("")
    names = sorted({n for lv in doc["levels"] for n in lv["resources"]})
    if names:
        lines.append("| concurrency | " + " | ".join(f"{n} CPU s (%) / peak RSS MB" for n in names) + " |")
        lines.append("|---:|" + "---:|" * len(names))
        for lv in doc["levels"]:
            cells = []
            for n in names:
                r = lv["resources"].get(n)
                cells.append("-" if r is None else f"{r['cpu_s']:.1f} ({r['cpu_pct']:.0f}%) / {r['peak_rss_mb']:.0f}")
            lines.append(f"| {lv['concurrency']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_chart(doc: dict[str, Any], path: Path) -> None:
    """Latency by concurrency (p50/p95/max, the 1.5 s line) and the median stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = doc["levels"]
    xs = [lv["concurrency"] for lv in levels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for key, style in (("p50", "o-"), ("p95", "s-"), ("max", "^--")):
        ys = [lv["caller_latency_ms"][key] for lv in levels]
        ax1.plot(xs, [np.nan if y is None else y for y in ys], style, label=key)
    ax1.axhline(TARGET_P95_MS, color="red", linestyle=":", label="1.5 s budget")
    for lv in levels:  # percentiles are over answered calls only: say how many were
        if lv["failed"]:
            y = lv["caller_latency_ms"]["max"] or TARGET_P95_MS
            ax1.annotate(f"{lv['ok']}/{lv['calls']} answered", (lv["concurrency"], y), textcoords="offset points",
                         xytext=(0, 8), ha="center", fontsize=8, color="darkred")
    ax1.set_xscale("log", base=2)
    # explicit limits: with no answered call there is no data to take them from (log scale would refuse)
    ax1.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ax1.set_xticks(xs, [str(x) for x in xs])
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("ms, caller's last word -> first reply audio")
    ax1.set_title("Caller-side latency")
    ax1.legend()
    ax1.grid(alpha=0.3)
    labels = [str(x) for x in xs]
    bottom = np.zeros(len(levels))
    names = {
        "pre_vad": "last word → VAD stop (stop_secs + input)",
        "vad_to_stt": "VAD→STT", "stt_to_llm": "STT→LLM", "llm_to_tts": "LLM→TTS", "tts_to_rtp": "TTS→RTP",
    }
    for stage, color in zip(("pre_vad", *STAGES), ("lightgray", "C0", "C1", "C2", "C3"), strict=True):
        vals = np.array([lv["stages_ms"].get(stage, {}).get("p50") or 0.0 for lv in levels])
        ax2.bar(labels, vals, bottom=bottom, label=names[stage], color=color)
        bottom += vals
    caller = [lv["caller_latency_ms"]["p50"] for lv in levels]
    ax2.plot(labels, [np.nan if c is None else c for c in caller], "kD", label="caller-side p50")
    ax2.axhline(TARGET_P95_MS, color="red", linestyle=":")
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("ms (medians; stages from the bot's spans)")
    ax2.set_title("Where the time goes")
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(f"ivrbot bench, {doc['started_at']}, load avg {doc['machine']['loadavg_start'][0]:.1f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "latency.json", "png": out / "latency.png", "md": out / "latency.md"}
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_chart(doc, paths["png"])
    header = f"`{doc['command']}` — {doc['started_at']}, {doc['machine']['cpus']} CPUs\n\n"
    paths["md"].write_text(header + markdown_table(doc), encoding="utf-8")
    return paths


# -- entry ----------------------------------------------------------------------------------------
