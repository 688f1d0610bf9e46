#!/usr/bin/env bash
# Train the default adapter (configs/default_grit.yaml) and copy it into the package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test,distill >/dev/null  # distill: the teacher embedders
. .venv/bin/activate
egtlm train configs/default_grit.yaml --teachers-only  # step 1: teacher vectors (resumable)
egtlm train configs/default_grit.yaml                  # step 2: training (resumes from checkpoints)
python scripts/ship_adapter.py runs/default_grit
