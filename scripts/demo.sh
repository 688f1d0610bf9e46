#!/usr/bin/env bash
# Set up .venv (CPU torch) and run the main demo on the offline default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test >/dev/null
. .venv/bin/activate
python examples/demo.py
