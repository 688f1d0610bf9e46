#!/usr/bin/env bash
# Create (or reuse) the project virtualenv at .venv and install egtlm with the given extras.
# torch is installed first from the pinned CPU build: a bare `torch` requirement can pull a
# multi-GB CUDA build. Usage: bash scripts/setup_env.sh [extras]   (default extras: test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
fi
python -m pip install -q -e ".[${extras}]" 2>&1 | grep -v '^WARNING: Location' || true
python -c "import torch, transformers, egtlm_core; print('egtlm', egtlm_core.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
