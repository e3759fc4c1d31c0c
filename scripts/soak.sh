#!/usr/bin/env bash
# Soak: MINUTES of 25 fps video (64x48 test pattern) through mmaudiogen with the real
# generator on the tiny random test model (1 sampler step, 8 s windows), sync=false, as
# fast as the machine goes; the RSS of the gst-launch-1.0 process is sampled every
# INTERVAL seconds into a CSV, then summarised: the RSS highs per 10 minutes of video, and
# the growth from the high after warm-up (5 minutes of video, or a tenth of the run; the
# high of the next as many seconds) to the high of the rest. RSS swings by a few hundred
# MB within each window (the generator's temporaries), so highs are compared, not single
# samples. The run passes if the growth stays within BOUND_MB (default 16).
#
# Usage: scripts/soak.sh [MINUTES [INTERVAL [OUT.csv]]]   (defaults: 60, 10, soak.csv)
# Needs a release build (cargo build --release --workspace). The CI version is
# `soak_short` in plugins/mmaudiogen/tests/soak.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-60}
INTERVAL=${2:-10}
OUT=${3:-soak.csv}
BOUND_MB=${BOUND_MB:-16}
FRAMES=$((MINUTES * 60 * 25))
BIN=target/release
[ -x "$BIN/mmaudio" ] && [ -e "$BIN/libgstmmaudio.so" ] || {
    echo "build first: cargo build --release --workspace" >&2
    exit 1
}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN/mmaudio" make-test-model "$WORK/model" --mode 16k >/dev/null
mkdir "$WORK/plugin" && cp "$BIN/libgstmmaudio.so" "$WORK/plugin/"
export GST_PLUGIN_PATH="$WORK/plugin" GST_REGISTRY="$WORK/registry.bin"

echo "soak: $MINUTES min of video ($FRAMES frames), RSS every $INTERVAL s into $OUT"
stdbuf -oL gst-launch-1.0 -m videotestsrc num-buffers="$FRAMES" pattern=ball \
    ! video/x-raw,width=64,height=48,framerate=25/1 ! videoconvert \
    ! mmaudiogen model-dir="$WORK/model" variant=small-16k num-steps=1 \
    ! fakesink sync=false >"$WORK/messages.txt" 2>"$WORK/stderr.txt" &
PID=$!
echo "elapsed_s,windows,video_s,rss_kb" >"$OUT"
START=$(date +%s)
while kill -0 "$PID" 2>/dev/null; do
    RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || true)
    [ -n "$RSS" ] || break
    WINDOWS=$(grep -c "mmaudiogen-window" "$WORK/messages.txt" || true)
    # Window k starts at 7 s·k (8 s windows, 1 s overlap).
    echo "$(( $(date +%s) - START )),$WINDOWS,$(( WINDOWS * 7 )),$RSS" >>"$OUT"
    sleep "$INTERVAL"
done
if ! wait "$PID"; then
    echo "gst-launch-1.0 failed:" >&2
    cat "$WORK/stderr.txt" >&2
    exit 1
fi
WINDOWS=$(grep -c "mmaudiogen-window" "$WORK/messages.txt" || true)
WALL=$(( $(date +%s) - START ))
awk -F, -v minutes="$MINUTES" -v windows="$WINDOWS" -v wall="$WALL" -v bound="$BOUND_MB" '
    # RSS swings within each window (the generator temporaries): compare highs, not
    # single samples: the highest sample between warm and 2 warm s of video against the
    # highest of everything later.
    NR == 1 { next }
    { n++; t[n] = $3; r[n] = $4; b = int($3 / 600); if ($4 > block[b]) block[b] = $4; if (b > nb) nb = b }
    END {
        warm = minutes * 60 / 10; if (warm > 300) warm = 300
        ref = 0; later = 0
        for (i = 1; i <= n; i++) {
            if (t[i] >= warm && t[i] < 2 * warm && r[i] > ref) ref = r[i]
            if (t[i] >= 2 * warm && r[i] > later) later = r[i]
        }
        if (!later) later = ref
        growth = (later - ref) / 1024
        printf "video %d min, %d windows in %d s wall (%.1fx real time)\n", minutes, windows, wall, minutes * 60 / wall
        printf "RSS highs per 10 min of video (MB):"
        for (i = 0; i <= nb; i++) printf " %.1f", block[i] / 1024
        printf "\nRSS high %.1f MB after warm-up (%d-%d s of video), %.1f MB later, last sample %.1f MB\n", ref / 1024, warm, 2 * warm, later / 1024, r[n] / 1024
        printf "growth after warm-up: %.1f MB (bound %d MB): %s\n", growth, bound, growth <= bound ? "flat" : "GROWING"
        exit growth <= bound ? 0 : 2
    }' "$OUT"
