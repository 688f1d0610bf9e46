#!/usr/bin/env bash
# Install everything the tests need and run them all, slow real-model tests included.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# The Redis tier's tests start a redis-server on 127.0.0.1 (skipped, with the reason, where none is)
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 ||
    echo "could not install redis-server; the Redis tier's tests will skip" >&2
fi
. .venv/bin/activate
ruff check .
mypy
set +e
# Two or more workers (one per core, at most 4), whole files per worker: a file's module fixtures (a
# Ray cluster, a Chroma server) start once; every test already runs torch on one thread.
python -m pytest -q -m "slow or not slow" -p no:cacheprovider --durations=25 \
  -n auto --maxprocesses 4 --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: the test layout is broken" >&2
  exit 1
fi
exit "$rc"
