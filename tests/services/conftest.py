"""Real sidecars for the service tests: one of each per test session (module-level restarts are per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sidecar_procs import SidecarProcess, llama_process, piper_process, vosk_process


@pytest.fixture(scope="session")
def sidecar_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sidecars")


@pytest.fixture(scope="session")
def llama(sidecar_logs: Path) -> Iterator[SidecarProcess]:
    p = llama_process(sidecar_logs)
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def vosk(sidecar_logs: Path) -> Iterator[SidecarProcess]:
    p = vosk_process(sidecar_logs)
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def piper(sidecar_logs: Path) -> Iterator[SidecarProcess]:
    p = piper_process(sidecar_logs)
    p.start()
    yield p
    p.stop()
