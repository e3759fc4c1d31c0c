# Shared by the pipelines/*.sh scripts (sourced, not run).
#
# Environment (all optional except MMAUDIO_MODEL_DIR):
#   MMAUDIO_MODEL_DIR       folder with the MMAudio weights (model-dir)
#   MMAUDIO_VARIANT         small-16k | small-44k | medium-44k | large-44k | large-44k-v2
#   MMAUDIO_DEVICE          auto | cpu | cuda:N
#   MMAUDIO_PRECISION       auto | f32 | f16 | bf16
#   MMAUDIO_PROMPT          text prompt;  MMAUDIO_NEGATIVE_PROMPT
#   MMAUDIO_STEPS           num-steps (25);  MMAUDIO_CFG  cfg-strength (4.5)
#   MMAUDIO_SEED            seed (42)
#   MMAUDIO_WINDOW_MS       window-duration (8000);  MMAUDIO_OVERLAP_MS  overlap (1000)
#   MMAUDIO_PROCESSING_LATENCY_MS   processing-latency (2000)
#   MMAUDIO_MAX_HEIGHT      frames are scaled down to at most this height before
#                           mmaudiogen (480; 0 = never), which bounds memory
#   MMAUDIO_EXTRA           more mmaudiogen properties, e.g. "mask-away-clip=true"
#   MMAUDIO_DRY_RUN         1: print the gst-launch-1.0 command instead of running it;
#                           argv: print its arguments NUL-separated (used by the tests)
#   GST_PLUGIN_PATH         defaults to <repo>/target/release when libgstmmaudio.so is there

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${GST_PLUGIN_PATH:-}" ] && [ -e "$REPO_ROOT/target/release/libgstmmaudio.so" ]; then
    export GST_PLUGIN_PATH="$REPO_ROOT/target/release"
fi

# Appends the mmaudiogen element and its properties to the array GEN.
mmaudiogen_args() {
    GEN=(mmaudiogen name=gen)
    if [ -n "${MMAUDIO_MODEL_DIR:-}" ]; then GEN+=("model-dir=$MMAUDIO_MODEL_DIR"); fi
    if [ -n "${MMAUDIO_VARIANT:-}" ]; then GEN+=("variant=$MMAUDIO_VARIANT"); fi
    if [ -n "${MMAUDIO_DEVICE:-}" ]; then GEN+=("device=$MMAUDIO_DEVICE"); fi
    if [ -n "${MMAUDIO_PRECISION:-}" ]; then GEN+=("precision=$MMAUDIO_PRECISION"); fi
    if [ -n "${MMAUDIO_PROMPT:-}" ]; then GEN+=("prompt=$MMAUDIO_PROMPT"); fi
    if [ -n "${MMAUDIO_NEGATIVE_PROMPT:-}" ]; then
        GEN+=("negative-prompt=$MMAUDIO_NEGATIVE_PROMPT")
    fi
    if [ -n "${MMAUDIO_STEPS:-}" ]; then GEN+=("num-steps=$MMAUDIO_STEPS"); fi
    if [ -n "${MMAUDIO_CFG:-}" ]; then GEN+=("cfg-strength=$MMAUDIO_CFG"); fi
    if [ -n "${MMAUDIO_SEED:-}" ]; then GEN+=("seed=$MMAUDIO_SEED"); fi
    if [ -n "${MMAUDIO_WINDOW_MS:-}" ]; then GEN+=("window-duration=$MMAUDIO_WINDOW_MS"); fi
    if [ -n "${MMAUDIO_OVERLAP_MS:-}" ]; then GEN+=("overlap=$MMAUDIO_OVERLAP_MS"); fi
    if [ -n "${MMAUDIO_PROCESSING_LATENCY_MS:-}" ]; then
        GEN+=("processing-latency=$MMAUDIO_PROCESSING_LATENCY_MS")
    fi
    if [ -n "${MMAUDIO_EXTRA:-}" ]; then
        local extra
        read -r -a extra <<<"$MMAUDIO_EXTRA"
        GEN+=("${extra[@]}")
    fi
}

# Appends "videoscale ! <height cap> !" to the array SCALE (nothing if disabled).
scale_args() {
    local h=${MMAUDIO_MAX_HEIGHT:-480}
    SCALE=()
    if [ "$h" != 0 ]; then SCALE=(videoscale ! "video/x-raw,height=[1,$h]" !); fi
}

# Runs gst-launch-1.0 -e with the given arguments (or prints them, see MMAUDIO_DRY_RUN).
launch() {
    case "${MMAUDIO_DRY_RUN:-0}" in
        argv) printf '%s\0' "$@"; exit 0 ;;
        1) printf 'gst-launch-1.0 -e'; printf ' %q' "$@"; printf '\n'; exit 0 ;;
    esac
    if [ -z "${MMAUDIO_MODEL_DIR:-}" ]; then
        echo "error: set MMAUDIO_MODEL_DIR to the folder with the MMAudio weight files" >&2
        exit 2
    fi
    exec gst-launch-1.0 -e "$@"
}
