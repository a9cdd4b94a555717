#!/usr/bin/env bash
# Create .venv with every dependency, pinned (requirements/constraints.txt), on Linux x86-64, Python 3.11, CPU.
# Idempotent: a second run only re-checks the installed set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -U "pip>=25"
.venv/bin/pip install -q -c requirements/constraints.txt -e ".[cpu,dev]"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers` beside CPU torch,
# and triton has no CPU backend; vLLM's text generation needs none of them.
.venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
.venv/bin/python -c "import pipeline, fasttext, trafilatura, ray, vllm" >/dev/null
# Debian's chromium and chromium-driver for the notebook's browser test (apt-get, as root; skipped when there)
bash scripts/setup-test-deps.sh
echo "environment ready: .venv"
