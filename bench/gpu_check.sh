#!/usr/bin/env bash
# One prepared check of a GPU machine, for a rented GPU before `make reproduce FULL=1` (≤ 5 minutes, venv included):
# builds .venv from the repository's own requirements (`make venv`; on a GPU machine PyPI's torch==2.14.1 wheel is
# the CUDA build), then runs bench/gpu_check.py, which closes with one line `N passed, N failed`.
#
#   bash bench/gpu_check.sh [--dry-run] [--reference DIR] [--work DIR] [--keep]
#
# --dry-run: tiny sizes; on a machine without CUDA it checks on the CPU what a CPU can and lists the CUDA checks
# it skipped (`make test` runs it). --reference: a checkout of HCP-MLR-PL for the bench's official column
# (default: $MLRPL_REFERENCE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v make >/dev/null || { echo "bench/gpu_check.sh: needs make and python3 >= 3.10 to build .venv" >&2; exit 2; }
start=$SECONDS
make --no-print-directory -s venv
echo "phase venv: $((SECONDS - start)) s (make venv: .venv with $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
exec .venv/bin/python bench/gpu_check.py "$@"
