#!/usr/bin/env bash
# Build the peer venvs of benchmarks/steering.py: .venv-pyvene, .venv-steering-vectors, .venv-repeng.
# Each gets torch==2.13.0 (CPU) FIRST and pinned, then the peer with transformers 4.x (steering-vectors
# requires <5; pyvene and repeng are run on the same 4.x for a like-for-like comparison). None of them
# pulls torchvision. Idempotent: a venv with its stamp file is left alone; FORCE=1 reinstalls.
# Usage: bash benchmarks/peers/setup_steering.sh [pyvene|steering-vectors|repeng ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=(pyvene steering-vectors repeng)

for peer in "${PEERS[@]}"; do
    case "$peer" in
        pyvene) module=pyvene ;;
        steering-vectors) module=steering_vectors ;;
        repeng) module=repeng ;;
        *) echo "unknown peer $peer (pyvene, steering-vectors, repeng)" >&2; exit 2 ;;
    esac
    VENV=".venv-$peer"
    PY="$VENV/bin/python"
    STAMP="$VENV/.installed-$peer"
    if [ -f "$STAMP" ] && [ "${FORCE:-0}" != "1" ] && "$PY" -c "import $module, transformers, torch" 2>/dev/null; then
        echo "$VENV: ready"
        continue
    fi
    test -x "$PY" || "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    # torch first and pinned exactly, so nothing below pulls a CUDA build.
    "$PY" -m pip install -q "torch==2.13.0"
    "$PY" -m pip install -q "torch==2.13.0" "$peer" "transformers>=4.46,<5" safetensors
    "$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)"; then
        echo "$VENV: torchvision got installed; this peer must not pull it" >&2; exit 1
    fi
    "$PY" -c "import $module, transformers; print('$VENV: installed $peer with transformers', transformers.__version__)"
    touch "$STAMP"
done
