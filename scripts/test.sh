#!/usr/bin/env bash
# The whole test suite: setup, lint (ruff), then pytest (real Ray, Optuna and MLflow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
