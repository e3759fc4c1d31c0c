#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine to a soundtrack, in one command:
#
#   scripts/quickstart.sh [IN.mp4 [OUT]]
#
# 1. installs the system packages (scripts/install-deps.sh; sudo when not root) and, if
#    cargo is missing, Rust through rustup;
# 2. builds the CLI and the GStreamer plugin (cargo build --release --workspace);
# 3. fetches and verifies the official weights of MMAUDIO_VARIANT (default small_16k, the
#    variant a CPU build can run; large_44k_v2 is the official default, for CUDA builds)
#    into MMAUDIO_MODEL_DIR (default ./models) — resumable, idempotent; without internet it
#    stops with the list of URLs and where each file goes (see docs/weights.md);
# 4. writes a soundtrack for IN (default: an 8 s demo clip made here) to OUT (default
#    <IN stem>.mmaudio.mp4 next to IN; .wav/.flac for the audio alone).
#
# Env: MMAUDIO_VARIANT, MMAUDIO_MODEL_DIR, MMAUDIO_PROMPT, MMAUDIO_DEVICE (auto|cpu|cuda:N),
# MMAUDIO_TEST_MODEL=1 (no download: a tiny random model, the "soundtrack" is noise — checks
# the whole chain offline).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

echo "== 1/4 system packages and Rust" >&2
scripts/install-deps.sh
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "quickstart: installing Rust with rustup (https://rustup.rs)" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

echo "== 2/4 build (cargo build --release --workspace)" >&2
cargo build --release --workspace
bin="$root/target/release/mmaudio"

# this build is CPU-only: the small 16 kHz variant is the one a CPU can run
variant="${MMAUDIO_VARIANT:-small_16k}"
models="${MMAUDIO_MODEL_DIR:-$root/models}"
if [ "${MMAUDIO_TEST_MODEL:-0}" = 1 ]; then
  echo "== 3/4 tiny random test model (MMAUDIO_TEST_MODEL=1): output will be noise" >&2
  models="$root/target/test-model"
  [ -f "$models/mmaudio.json" ] || "$bin" make-test-model "$models"
  variant=small_16k
else
  echo "== 3/4 weights for $variant in $models (mmaudio fetch-weights)" >&2
  mkdir -p "$models"
  if ! "$bin" fetch-weights --variant "$variant" --model-dir "$models"; then
    echo >&2
    echo "quickstart: the weights could not be fetched (above: which URL failed and where each" >&2
    echo "file belongs). Place them by hand (docs/weights.md) and rerun, or try the whole chain" >&2
    echo "offline with a tiny random model: MMAUDIO_TEST_MODEL=1 scripts/quickstart.sh" >&2
    exit 1
  fi
fi

in="${1:-}"
if [ -z "$in" ]; then
  in="$root/target/demo.mp4"
  if [ ! -f "$in" ]; then
    gst-launch-1.0 -q videotestsrc num-buffers=200 pattern=ball motion=sweep \
      ! video/x-raw,width=640,height=360,framerate=25/1 \
      ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location="$in"
  fi
fi
out="${2:-${in%.*}.mmaudio.mp4}"
echo "== 4/4 mmaudio generate $in -o $out" >&2
args=(--model-dir "$models" --variant "$variant")
[ -n "${MMAUDIO_PROMPT:-}" ] && args+=(--prompt "$MMAUDIO_PROMPT")
[ -n "${MMAUDIO_DEVICE:-}" ] && args+=(--device "$MMAUDIO_DEVICE")
"$bin" generate "$in" -o "$out" "${args[@]}"
