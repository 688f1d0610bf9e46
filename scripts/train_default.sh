#!/usr/bin/env bash
# Train the default adapter (configs/default_grit.yaml) and copy it into the package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test >/dev/null
. .venv/bin/activate
egtlm train configs/default_grit.yaml
python scripts/ship_adapter.py runs/default_grit
