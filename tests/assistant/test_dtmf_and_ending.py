"""DTMF menu actions and the ways a call ends, through the whole pipeline."""

from __future__ import annotations

import pytest
from call import Call, urls
from conftest import RecordingCallControl
from sidecar_procs import SidecarProcess

from ivrbot.assistant import is_hangup_phrase
from ivrbot.assistant_settings import AssistantSettings, DtmfAction, parse_dtmf_map

MENU = {
    "1": {"action": "transfer", "target": "sip:sales@10.0.0.5"},
    "2": {"action": "say", "text": "What are your opening hours?"},
    "9": {"action": "hangup"},
}


@pytest.mark.slow
async def test_dtmf_keys_run_their_actions(vosk: SidecarProcess, piper: SidecarProcess, llama: SidecarProcess,
                                           call_control: RecordingCallControl) -> None:
    s = AssistantSettings(**urls(vosk.port, piper.port, llama.port), max_tokens=30,  # type: ignore[arg-type]
                          dtmf_map=parse_dtmf_map(MENU))
    async with Call(s, call_control) as c:
        c.transport.press("1")
        assert await c.wait_for(lambda: call_control.transfers == ["sip:sales@10.0.0.5"])
        c.transport.press("2")
        # "say": the text becomes a user turn that the LLM answers and the caller hears.
        assert await c.wait_for(lambda: {"role": "user", "content": "What are your opening hours?"}
                                in c.assistant.context.messages)
        assert await c.wait_for(lambda: any(r.strip() for r in c.assistant.replies))
        assert await c.wait_for(lambda: c.transport.out_voiced_secs() > 0.5)
        c.transport.press("5")  # not in the menu: passed on, counted, nothing happens
        assert await c.wait_for(lambda: c.assistant.dtmf.unmapped == 1)
        c.transport.press("9")
        assert await c.wait_for(lambda: call_control.hangups == ["dtmf 9"])
    assert call_control.transfers == ["sip:sales@10.0.0.5"]
    assert [k for k, _ in c.assistant.dtmf.handled] == ["1", "2", "9"]


def test_dtmf_map_is_validated() -> None:
    assert parse_dtmf_map(MENU)["1"] == DtmfAction("transfer", target="sip:sales@10.0.0.5")
    for bad in ({"X": {"action": "hangup"}}, {"1": {"action": "transfer", "target": "sales"}},
                {"1": {"action": "dance"}}, {"1": {"action": "say", "text": " "}}, {"1": {}}):
        with pytest.raises(ValueError):
            parse_dtmf_map(bad)  # type: ignore[arg-type]


def test_hangup_phrases() -> None:
    phrases = ("goodbye", "hang up")
    assert is_hangup_phrase("OK, Goodbye!", phrases)
    assert is_hangup_phrase("please  hang\tup now", phrases)
    assert not is_hangup_phrase("good morning", phrases)
    assert not is_hangup_phrase("anything", ("", " "))
