"""Real sidecars and a test call for the assistant pipeline tests."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

from sidecar_procs import SidecarProcess, llama_process, piper_process, vosk_process


class RecordingCallControl:
    """The SIP side as the pipeline sees it: records hang-ups and transfers."""

    def __init__(self, transfer_ok: bool = True) -> None:
        self.hangups: list[str] = []
        self.transfers: list[str] = []
        self._ok = transfer_ok

    async def hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    async def transfer(self, target_uri: str) -> bool:
        self.transfers.append(target_uri)
        return self._ok


@pytest.fixture(scope="session")
def sidecar_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sidecars")


def _session(p: SidecarProcess) -> Iterator[SidecarProcess]:
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def llama(sidecar_logs: Path) -> Iterator[SidecarProcess]:
    yield from _session(llama_process(sidecar_logs))


@pytest.fixture(scope="session")
def vosk(sidecar_logs: Path) -> Iterator[SidecarProcess]:
    yield from _session(vosk_process(sidecar_logs))


@pytest.fixture(scope="session")
def piper(sidecar_logs: Path) -> Iterator[SidecarProcess]:
    yield from _session(piper_process(sidecar_logs))


@pytest.fixture
def call_control() -> RecordingCallControl:
    return RecordingCallControl()


@pytest.fixture
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
