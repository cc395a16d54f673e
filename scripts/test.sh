#!/usr/bin/env bash
# The whole test suite: setup, lint (ruff), types (mypy), then pytest (real Ray, Optuna and
# MLflow). The fast tier for day-to-day work: .venv/bin/python -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
# The project with the dev and cluster-test extras in one install; without the cluster-test
# extra (say, no registry for it) the simulated cluster tests are skipped.
EXTRAS=dev,cluster-test bash scripts/setup.sh \
  || { echo "the cluster test extra could not be installed: the simulated cluster tests will be skipped"; bash scripts/setup.sh; }
# The MLflow UI test drives a headless Chromium; install Debian's where we may (root + apt).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium for the MLflow UI test (apt-get)"
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
    || echo "chromium could not be installed: the MLflow UI test will be skipped"
fi
# The cluster tests: PostgreSQL (apt, where we may); their Python side came with the setup above.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing postgresql for the cluster tests (apt-get)"
  apt-get install -y -qq postgresql >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq postgresql >/dev/null 2>&1; } \
    || echo "postgresql could not be installed: the simulated cluster tests will be skipped"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # files and settings: [tool.mypy] in pyproject.toml
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
