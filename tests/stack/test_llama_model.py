"""The bundled GGUF is served as Q8_0: converted once by the real llama-quantize, cached, never half-written."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from ivrbot_sidecars import models

pytestmark = pytest.mark.slow

#: llama.cpp's LLAMA_FTYPE values for the two types involved
FTYPE_Q4_1 = 3
FTYPE_Q8_0 = 7
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _skip(f: BinaryIO, vtype: int) -> None:
    if vtype == 8:  # string: uint64 length, bytes
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(n, 1)
    elif vtype == 9:  # array: element type, uint64 count, elements
        etype, count = struct.unpack("<IQ", f.read(12))
        for _ in range(count):
            _skip(f, etype)
    else:
        f.seek(struct.calcsize(_SCALAR[vtype]), 1)


def gguf_file_type(path: Path) -> int:
    """``general.file_type`` from a GGUF's header (the quantization llama.cpp reports for the file)."""
    with path.open("rb") as f:
        magic, _version, _tensors, kvs = struct.unpack("<4sIQQ", f.read(24))
        assert magic == b"GGUF", f"{path} is not a GGUF file"
        for _ in range(kvs):
            (n,) = struct.unpack("<Q", f.read(8))
            key = f.read(n).decode()
            (vtype,) = struct.unpack("<I", f.read(4))
            if key == "general.file_type":
                (value,) = struct.unpack(_SCALAR[vtype], f.read(struct.calcsize(_SCALAR[vtype])))
                return int(value)
            _skip(f, vtype)
    raise AssertionError(f"{path} has no general.file_type")


def test_bundled_model_is_q4_1_and_is_served_as_q8_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMA_MODEL", raising=False)
    monkeypatch.setenv("IVRBOT_CACHE_DIR", str(tmp_path))
    bundled = models.bundled_llama_model_path()
    assert gguf_file_type(bundled) == FTYPE_Q4_1
    served = models.llama_model_path()
    assert served.parent == tmp_path / "models"
    assert gguf_file_type(served) == FTYPE_Q8_0
    assert [p.name for p in served.parent.iterdir()] == [served.name], "a partial file was left behind"


def test_conversion_runs_once_then_is_cached(tmp_path: Path) -> None:
    first = models.requantized(models.bundled_llama_model_path(), "Q8_0", tmp_path)
    stamp = first.stat().st_mtime_ns
    again = models.requantized(models.bundled_llama_model_path(), "Q8_0", tmp_path)
    assert again == first
    assert again.stat().st_mtime_ns == stamp, "the cached file was written again"


def test_concurrent_conversions_all_get_a_whole_file(tmp_path: Path) -> None:
    source = models.bundled_llama_model_path()
    results: list[Path] = []
    errors: list[BaseException] = []

    def convert() -> None:
        try:
            results.append(models.requantized(source, "Q8_0", tmp_path))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=convert) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert gguf_file_type(results[0]) == FTYPE_Q8_0
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]


def test_a_file_that_is_not_a_model_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all" * 10)
    out = tmp_path / "out"
    with pytest.raises(models.ModelNotFoundError, match=r"llama-server: converting .*bogus\.gguf to Q8_0 failed"):
        models.requantized(bogus, "Q8_0", out)
    assert list(out.iterdir()) == []


def test_llama_model_is_used_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    monkeypatch.setenv("LLAMA_MODEL", str(own))
    monkeypatch.setenv("IVRBOT_CACHE_DIR", str(tmp_path / "cache"))
    assert models.llama_model_path() == own
    assert not (tmp_path / "cache").exists(), "a model the user named must not be converted"
    monkeypatch.setenv("LLAMA_MODEL", str(tmp_path / "missing.gguf"))
    with pytest.raises(models.ModelNotFoundError, match="LLAMA_MODEL"):
        models.llama_model_path()
