"""Piper TTS over WebSocket: audio streamed sentence by sentence, utterances kept apart, cancellable.

Piper ships no streaming server, so the project defines this small protocol (docs/protocols.md):
- on connect the server sends ``{"type": "ready", "sample_rate": 22050}`` (the voice's rate);
- the client sends ``{"type": "speak", "id": ..., "text": ..., "flush": true}`` and
  ``{"type": "cancel", "id": ...}``;
- per utterance the server sends ``{"type": "audio_start", "id"}``, binary s16le mono frames (at
  most ``frame_ms`` each, every sentence as soon as it is synthesized; the quiet Piper puts before
  an utterance's first sound is not sent, it would only delay it), then
  ``{"type": "audio_end", "id", "reason": "done" | "cancelled" | "error"}``.

Why these rules:
- ``flush``: text of one id accumulates; complete sentences (a terminator and whitespace) are
  synthesized at once, the unfinished tail waits for more text; ``flush: true`` (the default)
  synthesizes the tail and ends the utterance. A token-streaming client sends ``flush: false`` and
  a final flush; a sentence-at-a-time client just sends ``flush: true`` per utterance.
- Utterances play one after another per connection, in the order of their first ``speak``, so the
  binary frames between ``audio_start`` and ``audio_end`` belong to that id and carry no header.
- ``cancel`` ends every live utterance with that id (playing or queued) with reason ``cancelled``;
  audio stops at once, the sentence being synthesized in a thread is discarded when it finishes.
- A malformed message gets ``{"type": "error", "message": ...}`` and the connection stays usable.
- Memory stays bounded whatever the text: Piper never gets more than ``segment_chars`` characters
  nor a pass of more than ``max_phonemes`` phonemes (text_segments), and an utterance holds at most
  ``max_text`` characters not yet synthesized.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from websockets.asyncio import server as ws_server
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed

from ivrbot_sidecars.entry import run_until_signal
from ivrbot_sidecars.logs import get_logger
from ivrbot_sidecars.piper_protocol import (
    MAX_MESSAGE,
    BadMessage,
    Cancel,
    ClientMessage,
    EndReason,
    Utterance,
    UttId,
    parse_message,
    pcm_frames,
    trim_leading_silence,
)
from ivrbot_sidecars.process import SidecarError
from ivrbot_sidecars.synthesis_scheduler import SynthesisScheduler
from ivrbot_sidecars.text_segments import (
    DEFAULT_PASS_PHONEMES,
    DEFAULT_SEGMENT_CHARS,
    speakable,
    split_phonemes,
)

log = get_logger(__name__)

# ---------------------------------------------------------------------------------------------
# The asyncio shell around piper_protocol.

T = TypeVar("T")

#: where `ivrbot serve` looks for it by default (AssistantSettings.piper_url; a test pins them equal)
DEFAULT_PORT = 5002

#: audio per character of text, an upper bound (English speech runs ~0.07 s a character): with the
#: measured real-time factor it says how long before its caller runs dry a sentence must start
AUDIO_SECONDS_PER_CHAR = 0.1


class _Cancelled(Exception):
    pass


def phoneme_passes(voice: Any, text: str, max_phonemes: int = DEFAULT_PASS_PHONEMES) -> list[list[str]]:
    """The passes Piper's ``synthesize()`` would make of ``text`` (one per sentence), none longer
    than ``max_phonemes``.

    A segment's characters bound its phonemes only loosely (numbers are read out in words), and
    Piper's memory follows the phonemes of one pass; so an overlong sentence is cut at word breaks.
    """
    return [part for phonemes in voice.phonemize(speakable(text))
            for part in split_phonemes(phonemes, max_phonemes) if part]


def synthesize_pass(voice: Any, part: list[str]) -> bytes:
    """One pass as s16le, normalized and converted as Piper does it."""
    audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(part))
    if isinstance(audio, tuple):
        audio = audio[0]
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return bytes(np.clip(audio * 32767.0, -32767.0, 32767.0).astype(np.int16).tobytes())


def _first_pass(voice: Any, text: str, max_phonemes: int) -> tuple[list[list[str]], bytes | None, float]:
    """In a worker thread: the segment's passes, and the first one synthesized (with how long it took).

    Knowing every pass up front, the player never schedules a job only to learn a segment is done:
    such a job, deferred as read-ahead, held back the next sentence (review of 2026-12-04).
    """
    t0 = time.perf_counter()
    parts = phoneme_passes(voice, text, max_phonemes)
    if not parts:
        return [], None, time.perf_counter() - t0
    return parts[1:], synthesize_pass(voice, parts[0]), time.perf_counter() - t0


def _next_pass(voice: Any, part: list[str]) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    return synthesize_pass(voice, part), time.perf_counter() - t0


class _Connection:
    """One client: a reader that files text under utterances, a player that synthesizes them in order."""

    def __init__(self, server: PiperServer, ws: ServerConnection) -> None:
        self.server, self.ws = server, ws
        self.queue: asyncio.Queue[Utterance] = asyncio.Queue()
        self.live: list[Utterance] = []  # queued or playing, in order
        self.open: dict[UttId, Utterance] = {}  # not yet flushed
        self.log = log.bind(peer=str(ws.remote_address))
        #: loop time at which the client will have played all audio sent so far (if it plays it as
        #: it comes, which the bot does): the deadline of this connection's next synthesis
        self.play_until = 0.0

    async def run(self) -> None:
        player = asyncio.create_task(self._player(), name="piper-player")
        try:
            await self._send({"type": "ready", "sample_rate": self.server.sample_rate})
            async for message in self.ws:
                await self._on_message(parse_message(message))
        except ConnectionClosed:
            pass
        except Exception:  # a bug must end this connection visibly, with a close frame
            self.log.exception("connection failed, closing it")
            await self.ws.close(1011, "internal error")
        finally:
            for utt in self.live:
                utt.cancelled.set()
            player.cancel()
            try:
                await player
            except (asyncio.CancelledError, ConnectionClosed):
                pass

    async def _on_message(self, msg: ClientMessage) -> None:
        if isinstance(msg, BadMessage):
            self.server.errors += 1
            self.log.warning("bad client message", reason=msg.reason)
            reply: dict[str, Any] = {"type": "error", "message": msg.reason}
            if msg.id is not None:
                reply["id"] = msg.id
            await self._send(reply)
        elif isinstance(msg, Cancel):
            hit = [u for u in self.live if u.id == msg.id]
            for utt in hit:
                utt.cancelled.set()
            self.open.pop(msg.id, None)
            # an interrupted client drops what it had buffered: its next sentence is wanted now
            self.play_until = asyncio.get_running_loop().time()
            self.log.debug("cancel", id=msg.id, utterances=len(hit))
        else:
            found = self.open.get(msg.id)
            waiting = found.pending if found is not None else 0
            if waiting + len(msg.text) > self.server.max_text:
                self.server.errors += 1
                self.log.warning("speak refused, utterance text limit", id=msg.id, waiting=waiting, text=len(msg.text))
                await self._send({"type": "error", "id": msg.id,
                                  "message": f"speak: text dropped, the utterance would hold more than "
                                             f"{self.server.max_text} characters not yet synthesized"})
                return
            if found is not None:
                utt = found
            else:
                if len(self.live) >= self.server.max_pending:
                    self.server.errors += 1
                    await self._send({"type": "error", "id": msg.id,
                                      "message": f"too many utterances queued (max {self.server.max_pending})"})
                    return
                utt = Utterance(msg.id, self.server.segment_chars)
                self.open[msg.id] = utt
                self.live.append(utt)
                self.queue.put_nowait(utt)
            utt.add(msg.text, msg.flush)
            if utt.flushed:
                del self.open[msg.id]

    async def _player(self) -> None:
        try:
            while True:
                utt = await self.queue.get()
                try:
                    await self._play(utt)
                finally:
                    self.live.remove(utt)
                    if self.open.get(utt.id) is utt:
                        del self.open[utt.id]
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except Exception:  # a bug must not leave the client waiting for audio_end forever
            self.log.exception("player failed, closing the connection")
            await self.ws.close(1011, "internal error")

    async def _play(self, utt: Utterance) -> None:
        await self._send({"type": "audio_start", "id": utt.id})
        reason: EndReason = "done"
        sent = 0
        try:
            while True:
                segment = await self._unless_cancelled(utt, utt.segments.get())
                if segment is None:
                    break
                utt.taken(segment)
                sent += await self._synthesize(utt, segment, first=sent == 0)
        except _Cancelled:
            reason = "cancelled"
        except Exception as exc:
            reason = "error"
            self.log.warning("synthesis failed", id=utt.id, error=str(exc))
            await self._send({"type": "error", "id": utt.id, "message": f"synthesis failed: {exc}"})
        await self._send({"type": "audio_end", "id": utt.id, "reason": reason})
        self.log.debug("utterance end", id=utt.id, reason=reason, bytes=sent)

    async def _synthesize(self, utt: Utterance, text: str, *, first: bool = False) -> int:
        """Stream one segment: the next pass synthesizes while this one's frames are sent."""
        loop = asyncio.get_running_loop()
        scheduler = self.server.scheduler
        voice = self.server.voice
        bytes_per_s = 2 * self.server.sample_rate
        # A pass must start this long before its connection runs dry: what the segment (the pass to
        # come is at most all of it) takes to synthesize at the real-time factor measured lately.
        lead = self.server.rtf * AUDIO_SECONDS_PER_CHAR * len(text)
        job = scheduler.submit(max(self.play_until, loop.time()) - lead, _first_pass, voice, text,
                               self.server.max_phonemes)
        pending: asyncio.Future[Any] | None = job
        sent = 0
        try:
            rest, pcm, took = await self._unless_cancelled(utt, asyncio.shield(job))
            pending = None
            while pcm is not None:
                self.server.observe_synthesis(took, len(pcm) / bytes_per_s)
                if first and sent == 0:
                    pcm = trim_leading_silence(pcm, self.server.sample_rate)
                if rest:
                    # the next pass is needed when the client has played what it has and this one
                    pending = scheduler.submit(max(self.play_until, loop.time()) + len(pcm) / bytes_per_s - lead,
                                               _next_pass, voice, rest.pop(0))
                for frame in pcm_frames(pcm, self.server.frame_bytes):
                    if utt.cancelled.is_set():
                        raise _Cancelled
                    await self.ws.send(frame)
                    sent += len(frame)
                    self.play_until = max(self.play_until, loop.time()) + len(frame) / bytes_per_s
                if pending is None:
                    break
                pcm, took = await self._unless_cancelled(utt, asyncio.shield(pending))
                pending = None
            return sent
        finally:
            if pending is not None and not scheduler.withdraw(pending):
                # a pass nobody waits for any more: let it finish, and keep its failure out of the log
                pending.add_done_callback(lambda fut: fut.cancelled() or fut.exception())

    async def _unless_cancelled(self, utt: Utterance, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the utterance is cancelled first (then raise _Cancelled)."""
        if utt.cancelled.is_set():
            if isinstance(aw, asyncio.Future):
                aw.cancel()
            else:
                aw.close()  # type: ignore[attr-defined]
            raise _Cancelled
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(utt.cancelled.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
        if utt.cancelled.is_set():
            raise _Cancelled
        return work.result()

    async def _send(self, obj: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(obj, ensure_ascii=False))


class PiperServer:
    """The Piper WebSocket server on ``host:port`` (port 0 picks a free one; read ``.port`` after start)."""

    def __init__(
        self,
        voice_path: Path | str,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        frame_ms: int = 100,
        workers: int | None = None,
        max_pending: int = 32,
        segment_chars: int = DEFAULT_SEGMENT_CHARS,
        max_text: int = MAX_MESSAGE,
        max_phonemes: int = DEFAULT_PASS_PHONEMES,
        threads: int | None = None,
        voice: Any = None,
    ) -> None:
        self.voice_path = Path(voice_path)
        self.host, self.port = host, port
        self.frame_ms = frame_ms
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.max_pending = max_pending
        self.segment_chars = segment_chars
        self.max_text = max_text
        self.max_phonemes = max_phonemes
        self.threads = threads
        self.voice: Any = voice
        self.errors = 0
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="piper")
        self.scheduler = SynthesisScheduler(self.pool, self.workers)
        #: seconds of synthesis per second of audio, a moving average over recent passes (starts
        #: pessimistic, a loaded 2-core box; an idle one measures ~0.1)
        self.rtf = 0.5
        self._server: Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def sample_rate(self) -> int:
        return int(self.voice.config.sample_rate)

    @property
    def frame_bytes(self) -> int:
        return max(2, self.sample_rate * self.frame_ms // 1000 * 2)

    async def start(self) -> None:
        """Load and warm the voice (the first synthesis is slow), then listen."""
        loop = asyncio.get_running_loop()
        if self.voice is None:
            t0 = time.monotonic()
            self.voice = await loop.run_in_executor(self.pool, load_voice, self.voice_path, self.threads)
            log.info("piper voice loaded", path=str(self.voice_path), seconds=round(time.monotonic() - t0, 2))
        t0 = time.monotonic()
        await loop.run_in_executor(self.pool, lambda: [c for c in self.voice.synthesize("Hello. Ready.")])
        log.info("piper voice warm", seconds=round(time.monotonic() - t0, 2), sample_rate=self.sample_rate)
        try:
            self._server = await ws_server.serve(self._handle, self.host, self.port, max_size=MAX_MESSAGE,
                                                 compression=None)
        except OSError as exc:
            raise SidecarError(f"piper-server: cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.port
        log.info("piper-server listening", host=self.host, port=self.port, workers=self.workers)

    def observe_synthesis(self, seconds: float, audio_seconds: float) -> None:
        if audio_seconds > 0.2:  # a short pass's fixed costs would overstate the rate
            self.rtf += 0.2 * (seconds / audio_seconds - self.rtf)

    async def stop(self) -> None:
        """Close the listener and all connections (their players are cancelled), then the threads."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.scheduler.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _handle(self, ws: ServerConnection) -> None:
        await _Connection(self, ws).run()


def load_voice(path: Path, threads: int | None = None) -> Any:
    """Load a Piper voice (.onnx + .onnx.json); raises SidecarError naming the path.

    ONNX Runtime's worker threads spin while idle by default; on the few cores a bot pod shares with
    Vosk and llama-server that steals their time, so spinning is off and the thread count bounded.
    """
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    from ivrbot_sidecars.models import check_piper_voice

    check_piper_voice(path)
    try:
        with open(f"{path}.json", encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        return PiperVoice(session=session, config=config)
    except Exception as exc:
        raise SidecarError(f"piper-server: cannot load voice {path}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """``ivrbot piper-server``: flags override PIPER_HOST/PIPER_PORT and PIPER_VOICE."""
    from ivrbot_sidecars.logs import configure_logging
    from ivrbot_sidecars.models import piper_voice_path

    p = argparse.ArgumentParser(prog="ivrbot piper-server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("PIPER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PIPER_PORT", DEFAULT_PORT)))
    p.add_argument("--voice", type=Path, help="voice .onnx (default: PIPER_VOICE or en_US-joe-medium)")
    p.add_argument("--frame-ms", type=int, default=100, help="longest binary audio frame, in ms")
    p.add_argument("--workers", type=int, default=None,
                   help="utterances synthesized at once across connections (default: CPU count)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per synthesis (default: 2)")
    p.add_argument("--segment-chars", type=int, default=DEFAULT_SEGMENT_CHARS,
                   help="longest text Piper synthesizes in one pass; longer runs are cut at clauses and spaces")
    a = p.parse_args(argv)
    configure_logging()
    return run_until_signal(
        "piper-server",
        lambda: PiperServer(
            a.voice or piper_voice_path(), a.host, a.port, frame_ms=a.frame_ms, workers=a.workers, threads=a.threads,
            segment_chars=a.segment_chars,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
