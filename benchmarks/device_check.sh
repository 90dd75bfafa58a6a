#!/usr/bin/env bash
# The device check on a machine with one NVIDIA GPU (benchmarks/device_check.py says what it runs): under 8 minutes,
# with nothing but the machine's own Python, which must hold jax with CUDA, torch with CUDA, flax, optax, diffrax,
# orbax-checkpoint, pytest, scikit-learn and matplotlib. gvlab is installed into it without dependencies.
#   bash benchmarks/device_check.sh [OUT_DIR]      (default: ./device_check; the JSON is OUT_DIR/device_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-device_check}
"$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null \
  || { echo "could not install gvlab into $PY (it needs setuptools and wheel)"; exit 1; }
PYTHONUNBUFFERED=1 "$PY" benchmarks/device_check.py "$OUT"
echo "device check written to $OUT/device_check.json"
