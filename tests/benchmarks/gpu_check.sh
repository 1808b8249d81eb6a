#!/usr/bin/env bash
# The GPU check in one command: bash tests/benchmarks/gpu_check.sh OUT_FOLDER (see gpu_check.py's docstring).
set -euo pipefail
exec "${PYTHON:-python3}" -m tests.benchmarks.gpu_check --device cuda --out "${1:?usage: gpu_check.sh OUT_FOLDER}"
