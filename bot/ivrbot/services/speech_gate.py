"""Which caller audio reaches the recognizer, sans-IO: speech (with a pre-roll), in batches; never silence.

The recognizer costs CPU for every second it is fed, silence included, and a call is mostly
silence (the bot talking, the caller thinking). The gate keeps the last ``preroll_bytes`` of audio
in a ring while the caller is silent and hands nothing out; when the VAD says speech started it
hands out that ring (the onset the VAD needed time to confirm) and from then on every
``batch_bytes`` of audio as one message; at the VAD's stop it hands out the remainder, so the final
result covers everything up to the stop. No byte is handed out twice and none is skipped while
speaking.
"""

from __future__ import annotations


class SpeechGate:
    """Fed every audio chunk of the call; returns what to send now (``b""`` for nothing)."""

    def __init__(self, preroll_bytes: int, batch_bytes: int) -> None:
        if preroll_bytes < 0 or batch_bytes < 2:
            raise ValueError("need preroll_bytes >= 0 and batch_bytes >= 2")
        # whole 16-bit samples, so a trimmed ring never starts in the middle of one
        self.preroll_bytes = preroll_bytes - preroll_bytes % 2
        self.batch_bytes = batch_bytes
        self.speaking = False
        self._buf = bytearray()
        #: audio fed, audio handed out, audio that fell out of the pre-roll ring (never sent)
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_skipped = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, audio: bytes) -> bytes:
        """One chunk of caller audio; returns a full batch while speaking, else ``b""``."""
        self.bytes_in += len(audio)
        buf = self._buf
        buf += audio
        if self.speaking:
            if len(buf) >= self.batch_bytes:
                return self._take()
            return b""
        excess = len(buf) - self.preroll_bytes
        if excess > 0:
            excess += excess % 2
            del buf[:excess]
            self.bytes_skipped += excess
        return b""

    def start(self) -> bytes:
        """The VAD heard speech start: the pre-roll, to send at once (``b""`` if already speaking)."""
        if self.speaking:
            return b""
        self.speaking = True
        return self._take()

    def stop(self) -> bytes:
        """The VAD heard speech stop: the rest of the utterance, to send before finalizing."""
        self.speaking = False
        return self._take()

    def flush(self) -> bytes:
        """A pause inside the utterance: what is buffered, to send before finalizing; still speaking."""
        return self._take()

    def clear(self) -> None:
        """Forget what is buffered (a new recognizer session has no use for old audio)."""
        self.bytes_skipped += len(self._buf)
        self._buf.clear()

    def _take(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        self.bytes_out += len(data)
        return data
