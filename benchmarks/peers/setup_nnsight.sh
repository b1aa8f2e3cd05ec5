#!/usr/bin/env bash
# Build the peer venv .venv-nnsight (nnsight needs transformers 4.x; interp's .venv has 5.x).
# Idempotent: does nothing once the venv is complete. Usage: bash benchmarks/peers/setup_nnsight.sh
# Set FORCE=1 to reinstall into the existing venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-nnsight
PY="$VENV/bin/python"
STAMP="$VENV/.installed-nnsight"

if [ -f "$STAMP" ] && [ "${FORCE:-0}" != "1" ] && "$PY" -c "import nnsight, transformers, torch" 2>/dev/null; then
    echo "$VENV: ready ($("$PY" -c 'import nnsight, transformers, torch; print("nnsight", nnsight.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'))"
    exit 0
fi

test -x "$PY" || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
# torch first and pinned exactly, so nothing below pulls a CUDA build.
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q "torch==2.13.0" nnsight "transformers>=4.46,<5" safetensors accelerate
"$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
"$PY" -c "import nnsight, transformers; print('$VENV: installed nnsight', nnsight.__version__, 'transformers', transformers.__version__)"
touch "$STAMP"
