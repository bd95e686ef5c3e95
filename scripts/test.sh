#!/usr/bin/env bash
# The test command: installs what is missing, then lint, types and the whole test suite against
# the real servers (the tests start Vosk, Piper, llama-server and sipp themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --install-only
echo "==> ruff"; .venv/bin/ruff check bot sidecars tools operator tests benchmarks
echo "==> mypy --strict"; .venv/bin/mypy
echo "==> pytest"; exec .venv/bin/pytest -q -p no:cacheprovider "$@"
