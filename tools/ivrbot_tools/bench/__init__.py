"""`ivrbot bench`: end-of-question to first-reply latency under load, measured with real calls.

Each call is what a phone does: INVITE, RTP both ways from the ACK on, a Korean question spoken by
espeak-ng (trailing silence trimmed so its end is the caller's last word), the reply listened to,
BYE. When it asks is the caller profile's choice (``--profiles``): after hearing the greeting out,
at once, after 1.5 s or 5 s of silence, or again after keeping the line open; the latency a caller
gets must not depend on it, so each level places calls of every chosen profile and reports them
per profile too. The caller's clock gives the number the user feels (last speech packet sent ->
first non-silent reply packet received); the bot's spans, exported over OTLP to a receiver inside
this process, say where that time went (``turn`` span, children ``stt``/``llm``/``tts``/``rtp.send``).
The bot's JSON log ("turn latency") is the fallback when a trace does not arrive, and each call
records which source it used.

Levels run one after the other; at level ``c`` that many callers run at once (starts jittered over
``--stagger`` seconds so questions do not end on the same 20 ms tick) until ``max(calls, c)`` calls
are done. CPU seconds and peak RSS of the bot and each sidecar are sampled with psutil per level,
and the load average is written down, because the machine is shared.

The package: ``profiles`` (who calls and when they ask), ``run`` (the levels and the calls),
``results`` (one call's figures and the statistics), ``report`` (JSON, table, chart), ``cli``.
"""

from ivrbot_tools.bench.cli import build_parser, main, parse_levels, parse_profiles, parse_target
from ivrbot_tools.bench.profiles import PROFILES, default_greeting, profile_plan
from ivrbot_tools.bench.report import markdown_table
from ivrbot_tools.bench.results import STAGES, level_holds, max_concurrency_within, stages_from_log, summarize

__all__ = [
    "PROFILES",
    "STAGES",
    "build_parser",
    "default_greeting",
    "level_holds",
    "main",
    "markdown_table",
    "max_concurrency_within",
    "parse_levels",
    "parse_profiles",
    "parse_target",
    "profile_plan",
    "stages_from_log",
    "summarize",
]
