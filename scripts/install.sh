#!/usr/bin/env bash
# Create .venv and install IdentityLock with everything its tests need. Idempotent; offline model weights only.
# Torch: we never pin torch in the package. This script picks a torch + torchvision pair for a fresh venv:
# on x86_64 Python 3.11 machines of this project the pair below is served from local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  python -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
fi
python -m pip install -q -e ".[test]"
# insightface depends on opencv-python (GUI build); make the headless build the one that provides cv2 so it
# imports on servers without a display.
cv_version=$(python -c "import importlib.metadata as m; print(m.version('opencv-python-headless'))")
python -m pip uninstall -q -y opencv-python >/dev/null 2>&1 || true
python -m pip install -q --force-reinstall --no-deps "opencv-python-headless==${cv_version}"
python -c "import cv2, dlib; print('cv2', cv2.__version__, '| dlib', dlib.__version__)"
