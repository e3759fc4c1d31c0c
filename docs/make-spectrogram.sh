#!/usr/bin/env bash
# Regenerate docs/spectrogram.png: a demo clip, its generated soundtrack (`mmaudio generate`)
# and the picture (`mmaudio spectrogram`): video frames above the log-mel spectrogram.
#
#   docs/make-spectrogram.sh [VIDEO]
#
# With MMAUDIO_MODEL_DIR set to a real model folder (see docs/weights.md) the picture shows
# real Foley; without it a tiny random test model is written and the "soundtrack" is noise
# (what the checked-in picture shows until someone with the weights reruns this).
# MMAUDIO_VARIANT, MMAUDIO_PROMPT and MMAUDIO_DEVICE are passed on when set.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release/mmaudio"
[ -x "$bin" ] || cargo build --release --workspace --manifest-path "$root/Cargo.toml"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
video="${1:-}"
if [ -z "$video" ]; then
  video="$work/demo.mp4"
  gst-launch-1.0 -q videotestsrc num-buffers=200 pattern=ball motion=sweep \
    ! video/x-raw,width=320,height=240,framerate=25/1 \
    ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location="$video"
fi
model="${MMAUDIO_MODEL_DIR:-}"
if [ -z "$model" ]; then
  model="$work/test-model"
  "$bin" make-test-model "$model" >/dev/null
fi
args=(--model-dir "$model" --no-progress)
[ -n "${MMAUDIO_VARIANT:-}" ] && args+=(--variant "$MMAUDIO_VARIANT")
[ -n "${MMAUDIO_DEVICE:-}" ] && args+=(--device "$MMAUDIO_DEVICE")
prompt="${MMAUDIO_PROMPT:-a ball bouncing}"
summary=$("$bin" generate "$video" -o "$work/out.mkv" --prompt "$prompt" "${args[@]}")
echo "$summary"
# the title names what was loaded: "wrote ...: ... with MMAudio small_16k (...), 16000 Hz, ..."
variant=$(sed -n 's/.* with MMAudio \([^,]*\),.*/\1/p' <<<"$summary")
"$bin" spectrogram "$work/out.mkv" -o "$root/docs/spectrogram.png" --duration 8 \
  --frame-interval 1 --variant "${variant:-unknown}" --prompt "$prompt"
