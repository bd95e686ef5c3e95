"""`ivrbot demo`: the README's main job — one real phone call through the whole stack.

It starts Vosk, Piper and llama-server, starts `ivrbot serve`, calls it over SIP with RTP like a
phone would, asks a question spoken by espeak-ng (in the language of the Vosk model), records the
answer to a WAV file, and prints what each side said and where the time went.
"""

from __future__ import annotations

import argparse
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ivrbot_tools import terminate
from ivrbot_tools.caller import SipCaller
from ivrbot_tools.local import LocalBot, LocalBotConfig, wait_for_event

DEFAULT_QUESTION = "안녕하세요 영업 시간이 어떻게 되나요"  # "Hello, what are your opening hours?"
DEFAULT_GREETING = "Hello, you are talking to the demo assistant. How can I help?"
STAGES = ("vad_to_stt", "stt_to_llm", "llm_to_tts", "tts_to_rtp", "total")
BUDGET_MS = {"vad_to_stt": 500, "stt_to_llm": 400, "llm_to_tts": 700, "total": 1500}


def trim_silence(pcm: bytes, threshold: int = 300) -> bytes:
    """Drop espeak's trailing silence, so 'end of the question' is the caller's last word."""
    a = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(a) > threshold)
    return pcm if loud.size == 0 else a[: loud[-1] + 1].tobytes()


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def say(msg: str) -> None:
    print(msg, flush=True)


async def ask_one_question(
    bot: LocalBot, question_pcm8k: bytes, *, wait_greeting: bool, reply_timeout: float = 20.0
) -> dict[str, Any]:
    """Place one call: (greeting,) question, the reply until it ends; returns what was measured."""
    async with SipCaller(bot.sip_target) as call:
        call_id = call.record.call_id
        if wait_greeting:
            await call.wait_audible(0.0, 10.0)
            await call.wait_quiet(0.8, 20.0)
        await call.play(question_pcm8k)
        t_end = call.record.speech_sent_until or time.monotonic()
        t_first = await call.wait_audible(t_end, reply_timeout)
        if t_first is not None:
            await call.wait_quiet(1.2, 30.0)
        reply_pcm = bytes(call.record.pcm)
        reply_audio = call.record.audible_seconds(t_end)
    turn = await wait_for_event(bot, call_id, "turn latency", 3.0) or {}
    said = [e.get("text", "") for e in bot.events(call_id) if e.get("event") == "caller said"]
    answered = [e.get("text", "") for e in bot.events(call_id) if e.get("event") == "bot said"]
    return {
        "call_id": call_id,
        "caller_latency_ms": None if t_first is None else round((t_first - t_end) * 1000.0, 1),
        "stages_ms": {s: turn.get(f"{s}_ms") for s in STAGES if turn.get(f"{s}_ms") is not None},
        "transcript": said[-1] if said else "",
        "reply": answered[-1] if answered else "",
        "reply_audio_s": round(reply_audio, 2),
        "pcm": reply_pcm,
    }


async def run_demo(question: str, out_dir: Path, greeting: str) -> int:
    from ivrbot_tools.speech_samples import caller_speech

    say("ivrbot demo: one real SIP/RTP call through Vosk -> llama.cpp -> Piper")
    say("[1/4] making the caller's question with espeak-ng ...")
    question_pcm = trim_silence(caller_speech(question, voice="ko", sample_rate=8000))
    say(f"      {question!r}: {len(question_pcm) / 16000:.1f} s of speech")
    say("[2/4] starting vosk-server, piper-server, llama-server and ivrbot serve (models load) ...")
    cfg = LocalBotConfig(log_path=out_dir / "demo-bot.log", env={"IVRBOT_GREETING": greeting})
    t0 = time.monotonic()
    async with LocalBot(cfg) as bot:
        say(f"      ready in {time.monotonic() - t0:.1f} s; bot SIP on udp 127.0.0.1:{bot.sip_port}")
        say("[3/4] calling the bot: greeting, then the question ...")
        result = await ask_one_question(bot, question_pcm, wait_greeting=bool(greeting))
    wav = out_dir / "demo-reply.wav"
    write_wav(wav, result["pcm"])
    say("[4/4] result")
    say(f"  call-id           : {result['call_id']}")
    say(f"  caller said       : {question!r}")
    say(f"  bot heard (Vosk)  : {result['transcript']!r}")
    say(f"  bot answered      : {result['reply']!r}")
    say(f"  reply audio       : {result['reply_audio_s']} s heard by the caller, recorded to {wav}")
    lat = result["caller_latency_ms"]
    say(f"  end of question -> first reply audio (caller's clock): {'no reply' if lat is None else f'{lat:.0f} ms'}")
    if result["stages_ms"]:
        say("  stages on the bot's clock (budget):")
        for stage, ms in result["stages_ms"].items():
            budget = BUDGET_MS.get(stage)
            say(f"    {stage:<11} {ms:7.0f} ms" + (f"   (<= {budget} ms)" if budget else ""))
    say(f"  bot log: {out_dir / 'demo-bot.log'}")
    ok = lat is not None and bool(result["transcript"]) and bool(result["reply"])
    say("demo: ok" if ok else "demo: FAILED (see the bot log)")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ivrbot demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--question", default=DEFAULT_QUESTION, help="what the caller says (espeak-ng, Korean voice)")
    p.add_argument("--greeting", default=DEFAULT_GREETING, help="the bot's greeting ('' for none)")
    p.add_argument("--out", type=Path, default=Path("out"), help="where the WAV and the bot log go")
    a = p.parse_args(argv)
    try:
        return terminate.run(run_demo(a.question, a.out, a.greeting))
    except KeyboardInterrupt:
        return 130
    except terminate.Terminated:
        return terminate.Terminated.exit_code
    except Exception as exc:
        print(f"ivrbot demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
