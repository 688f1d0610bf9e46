#!/usr/bin/env bash
# Install everything the tests need and run them all, slow real-model tests included.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
. .venv/bin/activate
ruff check .
mypy
set +e
python -m pytest -q -m "slow or not slow" -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: the test layout is broken" >&2
  exit 1
fi
exit "$rc"
