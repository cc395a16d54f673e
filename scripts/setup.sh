#!/usr/bin/env bash
# Create .venv and install the project. torch: an already installed build (e.g. your CUDA build)
# is kept; otherwise torch==2.13.0 is installed first (a local CPU wheel on machines that carry
# one, the standard PyPI build elsewhere), so the project's `torch>=2.4` never pulls another.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install "torch==2.13.0"
fi
$PIP install -e ".[${EXTRAS:-dev}]"   # EXTRAS=dev,cluster-test: scripts/test.sh
.venv/bin/python - <<'PY'
import torch, ray, optuna, mlflow
print(f"installed: torch {torch.__version__} (CUDA {torch.cuda.is_available()}), ray {ray.__version__}, "
      f"optuna {optuna.__version__}, mlflow {mlflow.__version__}")
PY
