"""A synthetic call with explicit timestamps, shared by the export tests."""

from __future__ import annotations

from ivrbot.telemetry.calls import CallTrace

T0 = 1000.0  # monotonic seconds; any value works, only differences matter

# turn 1: every stage within budget (total 1.2 s)
TURN1 = {"vad": T0 + 5.0, "stt": T0 + 5.3, "llm": T0 + 5.6, "tts": T0 + 6.0, "rtp": T0 + 6.2}
# turn 2: LLM->TTS takes 0.9 s against 0.7 s, total 1.7 s against 1.5 s
TURN2 = {"vad": T0 + 10.0, "stt": T0 + 10.2, "llm": T0 + 10.5, "tts": T0 + 11.4, "rtp": T0 + 11.7}


def play_call(ct: CallTrace) -> None:
    """INVITE at T0, answered, media, two turns, BYE."""
    ct.sip_event("100 Trying sent", T0 + 0.001)
    ct.answered(T0 + 0.05)
    ct.sip_event("ACK received", T0 + 0.08)
    ct.rtp_started(T0 + 0.05, local_port=40000, remote=("127.0.0.1", 50000))
    for turn in (TURN1, TURN2):
        ct.user_started_speaking(turn["vad"] - 1.5)
        ct.user_stopped_speaking(turn["vad"], stop_secs=0.3)
        ct.transcript_final(turn["stt"], chars=12)
        ct.llm_first_token(turn["llm"])
        ct.tts_first_audio(turn["tts"])
        ct.bot_started_speaking(turn["tts"] + 0.05)
        ct.mark_first_packet_sent(turn["rtp"])
    ct.sip_span("sip.bye", T0 + 20.0, T0 + 20.001, status=200, **{"sip.direction": "in"})
    ct.rtp_stopped(T0 + 20.0, packets_received=1000, packets_sent=600, packets_lost=2)
    ct.end("caller_bye", T0 + 20.001)
