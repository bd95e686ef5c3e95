"""Where the caller's audio stops travelling down an assistant call's pipeline.

Pipecat processors forward every frame they do not consume, so each 40 ms ``InputAudioRawFrame``
went on past its last reader (the user aggregator, whose VAD analyses it) through the LLM, the TTS,
the output transport and the assistant aggregator: two queue hops and a task switch in each, for
every frame of every call, caller silent or not. Nothing there reads input audio, so it ends here.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class InputAudioEnd(FrameProcessor):
    """Drops input audio; every other frame passes at once (direct mode: no queue of its own)."""

    def __init__(self) -> None:
        super().__init__(name="InputAudioEnd", enable_direct_mode=True)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (isinstance(frame, InputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM):
            await self.push_frame(frame, direction)
