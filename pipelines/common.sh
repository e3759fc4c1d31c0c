# Shared by the pipelines/*.sh scripts (sourced, not run).
#
# Environment (all optional):
#   MMAUDIO_MODEL_DIR       folder with the MMAudio weights (model-dir; default ./models,
#                           as the element and `mmaudio generate`)
#   MMAUDIO_VARIANT         auto (the folder's) | small-16k | small-44k | medium-44k |
#                           large-44k | large-44k-v2
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

# Prints the calling script's header comment (its usage), without the shebang or any code.
usage() {
    awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# `--help` / `-h` as the first argument: usage on stdout, exit 0. Otherwise, fewer than
# $1 or more than $2 arguments: usage on stderr, exit 2. Call as
# `handle_usage MIN MAX "$@"`.
handle_usage() {
    local min=$1 max=$2
    shift 2
    case "${1:-}" in -h | --help) usage; exit 0 ;; esac
    if [ $# -lt "$min" ] || [ $# -gt "$max" ]; then
        usage >&2
        exit 2
    fi
}

# Turns what gst-launch-1.0 printed when it failed (file $1) into a sentence saying what to
# do (stderr). Nothing when the failure is not one of the known kinds.
explain_failure() {
    local log=$1 el a b
    el=$(sed -n 's/.*no element "\([^"]*\)".*/\1/p' "$log" | head -n 1)
    if [ -n "$el" ]; then
        if [ "$el" = mmaudiogen ]; then
            echo "mmaudio: the GStreamer element mmaudiogen was not found: build the plugin" \
                "(cargo build --release -p gst-plugin-mmaudio) and set GST_PLUGIN_PATH to" \
                "the folder holding libgstmmaudio.so (now: ${GST_PLUGIN_PATH:-unset})." >&2
        else
            echo "mmaudio: the GStreamer element $el is not installed: install the plugin" \
                "set that has it (gst-inspect-1.0 $el; scripts/install-deps.sh installs" \
                "good, bad, ugly and libav)." >&2
        fi
        return
    fi
    a=$(sed -n 's/.*could not link \([^ ,]*\) to \([^ ,]*\).*/\1/p' "$log" | head -n 1)
    b=$(sed -n 's/.*could not link \([^ ,]*\) to \([^ ,]*\).*/\2/p' "$log" | head -n 1)
    if [ -n "$a" ]; then
        echo "mmaudio: GStreamer could not connect $a to $b: the data $a produces is not" \
            "something $b takes (e.g. a video codec the output container cannot hold, or an" \
            "audio format the sink refuses); try another output type." >&2
        return
    fi
    if grep -q 'reason not-negotiated' "$log"; then
        echo "mmaudio: two elements could not agree on a format (not-negotiated): the input" \
            "may hold a codec the output container cannot take; try .mkv, or check the" \
            "ERROR above for the element." >&2
    elif grep -q 'reason not-linked' "$log"; then
        echo "mmaudio: a stream of the input had nowhere to go (not-linked): the input may" \
            "lack a video stream, or hold a codec this pipeline does not handle." >&2
    elif grep -q 'missing a plug-in' "$log"; then
        echo "mmaudio: no decoder for a stream of the input: install the GStreamer plugins" \
            "for its codec (scripts/install-deps.sh installs good, bad, ugly and libav)." >&2
    fi
}

# Runs gst-launch-1.0 -e with the given arguments (or prints them, see MMAUDIO_DRY_RUN).
launch() {
    case "${MMAUDIO_DRY_RUN:-0}" in
        argv) printf '%s\0' "$@"; exit 0 ;;
        1) printf 'gst-launch-1.0 -e'; printf ' %q' "$@"; printf '\n'; exit 0 ;;
    esac
    if [ -z "${MMAUDIO_MODEL_DIR:-}" ] && [ ! -d models ]; then
        echo "error: set MMAUDIO_MODEL_DIR to the folder with the MMAudio weight files" \
            "(or run from a folder holding them in ./models)" >&2
        exit 2
    fi
    local log status
    log=$(mktemp "${TMPDIR:-/tmp}/mmaudio-launch.XXXXXX")
    # stderr still reaches the terminal, and is kept for the explanation
    exec 3>&1
    set +e
    gst-launch-1.0 -e "$@" 2>&1 1>&3 3>&- | tee "$log" >&2
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" != 0 ]; then
        explain_failure "$log"
    fi
    rm -f "$log"
    exit "$status"
}
