#!/usr/bin/env bash
# nvcc stand-in for `cargo check --features cuda` (CI compile check, no GPU, 2 cores).
#
# candle-kernels' build script (through cudaforge, which runs "$NVCC" when set) does two
# things: it compiles most kernels to PTX (`nvcc --ptx ...`, a few minutes; the PTX is
# embedded with include_str! into candle-kernels, so `cargo check` needs it), and it
# compiles the MoE/GGUF/MMQ kernels to host objects (`nvcc -c -o X.o ...`, ~30 min on
# 2 cores) and archives them (`nvcc --lib -o libmoe.a ...`). A check never links, so those
# objects are never used: this wrapper writes an empty (valid) ELF object for each `-c`
# compilation and archives with `ar`, and hands everything else to the real nvcc.
#
# Use: NVCC=/path/to/scripts/nvcc-check-wrapper.sh cargo check --features cuda ...
# The real nvcc is $NVCC_REAL, else `nvcc` on PATH (source scripts/cuda-env.sh first).
# For a build whose binaries are run (scripts/gpu-check.sh build does this by default to
# save ~25 min) it is only sound because nothing in gst-mmaudio calls the MoE/GGUF kernels:
# a binary that referenced one would fail to link (undefined symbol), never run wrong;
# gpu-check.sh also checks the plugin for such undefined symbols.
set -euo pipefail
real="${NVCC_REAL:-nvcc}"
compile=0 lib=0 out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -c | --compile) compile=1 ;;
    -lib | --lib) lib=1 ;;
    -o | --output-file) out="${args[$((i + 1))]:-}" ;;
  esac
done
if [ "$lib" = 1 ] && [ -n "$out" ]; then
  objs=()
  for a in "$@"; do case "$a" in *.o) objs+=("$a") ;; esac; done
  rm -f "$out"
  exec ar rcs "$out" "${objs[@]}"
fi
if [ "$compile" = 1 ] && [ -n "$out" ]; then
  exec "${CC:-cc}" -x c -c /dev/null -o "$out"
fi
exec "$real" "$@"
