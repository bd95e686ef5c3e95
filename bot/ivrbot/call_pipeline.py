"""What the call manager runs on a call's media: one small protocol, echo or the assistant behind it.

The call manager builds a :class:`CallMedia` for each admitted call, asks the configured factory for
a :class:`CallPipeline` (constructing it starts nothing), runs it in the call's task and stops it
when the call ends. It knows nothing else about what runs there, so there is no echo branch in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipecat.clocks.base_clock import BaseClock

from ivrbot.apology import ApologyAudio
from ivrbot.assistant_settings import AssistantSettings
from ivrbot.dtmf_menu import CallControl
from ivrbot.transport import OpenSIPSTransport


class CallPipeline(Protocol):
    """One call's media processing, from the call's set-up to its end."""

    async def run(self) -> None:
        """Start, then return when the pipeline is done (by itself, or after ``stop()``); the call
        manager hangs up a call whose pipeline is done while the call is still up."""

    async def stop(self) -> None:
        """End the pipeline now; safe before ``run()`` started and after it returned."""


@dataclass(frozen=True)
class CallMedia:
    """What a call's pipeline is given: the call's transport and its controls."""

    call_id: str
    transport: OpenSIPSTransport
    control: CallControl
    #: Pipecat observers (the call trace) and the clock their timestamps are taken on
    observers: list[Any] = field(default_factory=list)
    clock: BaseClock | None = None


PipelineFactory = Callable[[CallMedia], CallPipeline]


def pipeline_factory(
    *, echo: bool, settings: AssistantSettings, apology: ApologyAudio, tracing: bool
) -> PipelineFactory:
    """The pipeline the configuration asks for: the echo (``--echo``) or the assistant."""
    if echo:
        from ivrbot.echo import EchoPipeline

        return lambda media: EchoPipeline(media.transport)

    from ivrbot.assistant import CallAssistant

    def assistant(media: CallMedia) -> CallPipeline:
        return CallAssistant(
            media.transport,
            settings,
            media.control,
            call_id=media.call_id,
            apology=apology,
            enable_tracing=tracing,
            observers=media.observers,
            clock=media.clock,
        )

    return assistant
