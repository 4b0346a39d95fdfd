#!/bin/sh
# Create the virtual environment and install tradedesk with its dev extra.
# Where no NVIDIA GPU is present, install a CPU build of torch first (small and fast);
# the project's `torch>=` range is then already satisfied. With a GPU, pip resolves the
# default (CUDA) build.
set -eu
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "install: NVIDIA GPU found: installing the CUDA build of torch"
        "$PY" -m pip install -q "torch>=2.4"
    else
        echo "install: no GPU: installing a CPU build of torch"
        "$PY" -m pip install -q torch==2.13.0 \
            || "$PY" -m pip install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu \
            || echo "install: no CPU build found; pip will pick torch with the project"
    fi
fi
"$PY" -m pip install -q -e ".[dev]"
echo "install: done ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
