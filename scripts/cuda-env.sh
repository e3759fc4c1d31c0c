#!/usr/bin/env bash
# Set up a CUDA 13.0 toolchain from PyPI wheels (no system CUDA needed) and export the
# variables `cargo build --features cuda` needs. Source it:
#
#     source scripts/cuda-env.sh            # venv in ./.cuda-venv (created on first use)
#     cargo build --release --features cuda
#
# Env: MMAUDIO_CUDA_VENV (venv path), CUDA_COMPUTE_CAP (default 90 = Hopper; 80 = A100,
# 89 = Ada, 86 = Ampere consumer). nvcc 13.0 is pinned because the GPU machines' driver
# (580, CUDA 13.0) refuses PTX from newer nvcc. A link-time stub libcuda.so is generated
# (the driver library comes with the NVIDIA driver on the machine that runs the binary).
set -e
_mm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_mm_venv="${MMAUDIO_CUDA_VENV:-$_mm_root/.cuda-venv}"
if [ ! -x "$_mm_venv/bin/python" ] || ! "$_mm_venv/bin/python" -c 'import nvidia' 2>/dev/null; then
  echo "cuda-env: installing CUDA 13.0 wheels into $_mm_venv (~1.2 GB)" >&2
  python3 -m venv "$_mm_venv"
  "$_mm_venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cublas" "nvidia-curand"
fi
_mm_site="$("$_mm_venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
export CUDA_HOME="$_mm_site/nvidia/cu13"
export CUDA_PATH="$CUDA_HOME"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export PATH="$CUDA_HOME/bin:$PATH"
_mm_lib="$CUDA_HOME/lib"
# the wheels lack the unversioned development links
for _l in cublas cublasLt cudart nvrtc curand; do
  _f="$(ls "$_mm_lib"/lib$_l.so.* 2>/dev/null | grep -v alt | head -n1)"
  [ -n "$_f" ] && [ ! -e "$_mm_lib/lib$_l.so" ] && ln -s "$(basename "$_f")" "$_mm_lib/lib$_l.so"
done
# link-time stub of the driver library: every cu* function declared in cuda.h
if [ ! -e "$_mm_lib/stubs/libcuda.so" ]; then
  mkdir -p "$_mm_lib/stubs"
  _tmp="$(mktemp -d)"
  gcc -E -P -I"$CUDA_HOME/include" "$CUDA_HOME/include/cuda.h" \
    | grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d ' (' | sort -u \
    | awk '{print "int " $1 "(void) { return 999; }"}' > "$_tmp/stub.c"
  gcc -shared -fPIC -o "$_mm_lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$_tmp/stub.c"
  rm -rf "$_tmp"
fi
export LIBRARY_PATH="$_mm_lib:$_mm_lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# where the binaries find the CUDA runtime libraries at run time (not the stub)
export LD_LIBRARY_PATH="$_mm_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "cuda-env: CUDA_HOME=$CUDA_HOME nvcc $(nvcc --version | grep -oE 'release [0-9.]+') CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2
set +e
