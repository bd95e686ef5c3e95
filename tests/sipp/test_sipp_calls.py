"""Real calls from sipp against the bot's SIP endpoint."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SipTarget, run_sipp
from pcapwriter import write_rtp_pcap


async def _until(cond: object, limit: float = 20.0) -> None:
    """Wait for a condition the event loop will make true (bounded, so a bug fails, not hangs)."""
    assert callable(cond)
    for _ in range(int(limit / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)


def caller_pcap(workdir: Path) -> int:
    """espeak-ng speech -> WAV -> 8 kHz mu-law (sox) -> RTP pcap."""
    wav = workdir / "caller.wav"
    ulaw = workdir / "caller.ul"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(wav), "hello, I would like to book a table"], check=True)
    else:
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", str(wav), "synth", "2", "sine", "440"], check=True)
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(ulaw)], check=True)
    return write_rtp_pcap(workdir / "caller.pcap", ulaw.read_bytes())


async def test_call_with_pcmu_audio_and_bye(sip_target: SipTarget, tmp_path: Path) -> None:
    sent = caller_pcap(tmp_path)
    assert sent > 50
    res = await run_sipp(sip_target, "uac_call_pcap.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1 and res.failed == 0, res.output
    if sip_target.app is not None:
        app = sip_target.app
        await _until(lambda: len(app.ended) == 1)
        (call_id, reason), = app.ended.items()
        assert reason == "remote_bye"
        assert app.established == [call_id]
        assert app.headers[call_id].header("X-Test") == "pcap-call"
        sink = app.finished[call_id]
        assert sink.counts.get(0, 0) >= sent * 0.9
        assert sink.audio_seqs == sorted(sink.audio_seqs)


async def test_cancel_before_answer(sip_target: SipTarget, tmp_path: Path) -> None:
    res = await run_sipp(sip_target, "uac_cancel.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1, res.output
    if sip_target.app is not None:
        app = sip_target.app
        # on_invite was still sleeping when the CANCEL came; once it returns, on_ended frees the call.
        await _until(lambda: len(app.ended) == 1)
        assert list(app.ended.values()) == ["cancelled"]
        assert app.established == [] and app.active == set() and app.sinks == {}


async def test_options(sip_target: SipTarget, tmp_path: Path) -> None:
    res = await run_sipp(sip_target, "uac_options.xml", tmp_path, calls=3, limit=1)
    assert res.returncode == 0, res.output
    assert res.successful == 3, res.output


async def test_options_and_invite_refused_while_draining(sip_target: SipTarget, tmp_path: Path) -> None:
    if sip_target.server is None:
        pytest.skip("draining is started through the in-test server")
    sip_target.server.start_draining()
    res = await run_sipp(sip_target, "uac_options_draining.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert sip_target.server.stats.responses[503] == 1


async def test_bye_for_unknown_dialog_is_481(sip_target: SipTarget, tmp_path: Path) -> None:
    res = await run_sipp(sip_target, "uac_bye_unknown.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1, res.output


@pytest.mark.parametrize("scenario", ["uac_invite_pcma_only.xml", "uac_invite_no_sdp.xml"])
async def test_unacceptable_invite_is_488(sip_target: SipTarget, tmp_path: Path, scenario: str) -> None:
    res = await run_sipp(sip_target, scenario, tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1, res.output
    if sip_target.app is not None:
        assert sip_target.app.accepted == 0 and sip_target.app.headers == {}
        assert sip_target.server is not None and sip_target.server.stats.rejected[488] == 1


async def test_more_calls_than_the_limit(sip_target: SipTarget, tmp_path: Path) -> None:
    calls = sip_target.max_calls + 3
    res = await run_sipp(sip_target, "uac_capacity.xml", tmp_path, calls=calls, limit=calls, rate=100)
    assert res.returncode == 0, res.output
    assert res.successful == calls, res.output
    if sip_target.app is not None:
        app = sip_target.app
        assert app.accepted == sip_target.max_calls
        assert app.rejected == 3
        await _until(lambda: len(app.ended) == sip_target.max_calls)
        assert set(app.ended.values()) == {"remote_bye"}
        assert app.active == set()


async def test_dtmf_events(sip_target: SipTarget, tmp_path: Path) -> None:
    res = await run_sipp(sip_target, "uac_dtmf.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1, res.output
    if sip_target.app is not None:
        app = sip_target.app
        await _until(lambda: len(app.finished) == 1)
        (sink,) = app.finished.values()
        assert sink.dtmf_pt == 96 and sink.counts.get(96, 0) > 4
        assert "".join(sink.digits) == "1590"


async def test_hold_and_resume(sip_target: SipTarget, tmp_path: Path) -> None:
    res = await run_sipp(sip_target, "uac_hold_resume.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1, res.output
    if sip_target.app is not None:
        app = sip_target.app
        await _until(lambda: len(app.ended) == 1)
        assert [m.direction for m in app.reinvites] == ["recvonly", "sendrecv"]
        assert app.reinvites[0].receive and not app.reinvites[0].send


async def test_truncated_invite_is_400(sip_target: SipTarget, tmp_path: Path) -> None:
    res = await run_sipp(sip_target, "uac_malformed_400.xml", tmp_path)
    assert res.returncode == 0, res.output
    assert res.successful == 1, res.output
    if sip_target.server is not None:
        assert sip_target.server.stats.malformed == 1
        assert sip_target.app is not None and sip_target.app.headers == {}
