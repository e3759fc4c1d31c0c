#!/usr/bin/env bash
# CI compile check of the `cuda` feature on a machine without GPU or system CUDA (called by
# .ci/run after the CPU tests; runs on its own too).
#
# nvcc and headers come from PyPI's CUDA 13.0 wheels (scripts/cuda-env.sh: a venv in
# ./.cuda-venv unless MMAUDIO_CUDA_VENV names one, ~1.2 GB, ~1 min), then
# `cargo check --workspace --all-targets --features cuda` (library, CLI, plugin, tests)
# with NVCC=scripts/nvcc-check-wrapper.sh: candle-kernels' PTX is compiled by the real
# nvcc (the check embeds it), its statically linked MoE/GGUF kernels, ~30 min of nvcc on
# 2 cores and only ever needed by a link, become empty objects.
#
# Env: MMAUDIO_CUDA_VENV, MMAUDIO_CUDA_CHECK_TARGET (target dir, default target/cuda-check),
# CUDA_COMPUTE_CAP (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
# cuda-env.sh makes a venv: Debian's python3 needs python3-venv for that
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
  $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
# cuda-env.sh is written to be sourced by interactive shells: strict mode off meanwhile
set +euo pipefail
# shellcheck source=cuda-env.sh
source scripts/cuda-env.sh
rc=$?
set -euo pipefail
if [ "$rc" != 0 ] || ! command -v nvcc >/dev/null; then
  echo "ci-cuda-check: CUDA toolchain setup failed (scripts/cuda-env.sh)" >&2
  exit 1
fi
echo "ci-cuda-check: toolchain ready after $(($(date +%s) - t0)) s" >&2
NVCC_REAL="$(command -v nvcc)" NVCC="$PWD/scripts/nvcc-check-wrapper.sh" \
  CARGO_TARGET_DIR="${MMAUDIO_CUDA_CHECK_TARGET:-target/cuda-check}" \
  cargo check --workspace --all-targets --features cuda
echo "ci-cuda-check: passed in $(($(date +%s) - t0)) s" >&2
