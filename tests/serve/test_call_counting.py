"""The call manager counts a call as answered only once its 200 OK went out: a call the caller
cancelled while it was being set up is a refusal ("cancelled"), not an answered call that ended.
Real RTP sockets and the real echo pipeline; the SIP side is driven through the application
contract the SIP shell calls (on_invite, then the answered call's on_answered and on_ended)."""

from __future__ import annotations

import asyncio
import random

from prometheus_client.parser import text_string_to_metric_families

from ivrbot.apology import ApologyAudio
from ivrbot.call_manager import CallLimits, CallManager
from ivrbot.call_pipeline import pipeline_factory
from ivrbot.config import BotConfig
from ivrbot.metrics import Metrics
from ivrbot.sdp import parse_offer
from ivrbot.sip.call import Answer, SipCall
from ivrbot.sip.events import CallInfo
from ivrbot.sip.useragent import UaConfig, UserAgent
from ivrbot.telemetry.setup import Tracing, TracingConfig

OFFER = (
    "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
)


def _call(call_id: str) -> SipCall:
    """A call's handle on a SIP core that never heard of it (its hang-up answers False)."""
    info = CallInfo(call_id, "sip:a@127.0.0.1", "f", "sip:bot@127.0.0.1", "t", "sip:bot@127.0.0.1",
                    ("127.0.0.1", 5060), ())
    core = UserAgent(UaConfig(advertised_address="127.0.0.1", advertised_port=5060))
    return SipCall(info, core, lambda: None)


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_cancelled_call_is_not_counted_as_answered() -> None:
    base = random.randrange(30000, 60000, 2)
    config = BotConfig(sip_host="127.0.0.1", advertised_address="127.0.0.1", rtp_port_min=base,
                       rtp_port_max=base + 40, echo=True)
    metrics = Metrics()
    tracing = Tracing(TracingConfig(), None)
    pipelines = pipeline_factory(echo=True, settings=config.assistant_settings(),
                                 apology=ApologyAudio(b"", 16000, ""), tracing=False)
    manager = CallManager(CallLimits.from_config(config, "127.0.0.1"), pipelines, metrics=metrics, tracing=tracing)
    offer = parse_offer(OFFER)

    try:
        # CANCEL while on_invite ran: the SIP layer never sends the 200 and reports "cancelled".
        cancelled_call = await manager.on_invite(_call("cancelled-1"), offer)
        assert isinstance(cancelled_call, Answer)
        await asyncio.sleep(0.2)  # the call's pipeline is up when the CANCEL's on_ended comes
        await cancelled_call.handler.on_ended("cancelled")
        cancelled = _samples(metrics)
        assert cancelled[("ivrbot_calls_answered_total", ())] == 0
        assert cancelled[("ivrbot_calls_rejected_total", (("reason", "cancelled"),))] == 1
        # A normal call: 200 OK sent, then the caller hangs up.
        answered = await manager.on_invite(_call("answered-1"), offer)
        assert isinstance(answered, Answer)
        await asyncio.sleep(0.2)
        await answered.handler.on_answered()
        assert _samples(metrics)[("ivrbot_calls_active", ())] == 1
        await answered.handler.on_ended("remote_bye")
    finally:  # a failed assertion must not leave a pipeline running
        for active in list(manager.calls):
            await active.on_ended("test_end")
    s = _samples(metrics)
    assert s[("ivrbot_calls_answered_total", ())] == 1
    assert s[("ivrbot_calls_rejected_total", (("reason", "cancelled"),))] == 1
    assert s[("ivrbot_calls_ended_total", (("reason", "remote_bye"),))] == 1
    assert ("ivrbot_calls_ended_total", (("reason", "cancelled"),)) not in s
    assert s[("ivrbot_calls_active", ())] == 0
    assert manager.ports.in_use == 0 and manager.calls == set()
