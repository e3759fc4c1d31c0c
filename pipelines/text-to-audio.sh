#!/usr/bin/env bash
# Text-only generation: audio of a given duration from a prompt alone.
#
# Usage: text-to-audio.sh "PROMPT" SECONDS OUT.wav|OUT.flac|OUT.ogg   (-h, --help: this text)
#
# A black 25 fps videotestsrc of the wanted duration only sets the timing; mmaudiogen
# runs with text-only=true, so no frame reaches the model (MMAudio's text-to-audio mode).
# Long durations are generated in crossfaded windows like any video.
# Environment: see pipelines/common.sh (MMAUDIO_MODEL_DIR, default ./models).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

handle_usage 3 3 "$@"
PROMPT=$1 SECONDS_WANTED=$2 OUT=$3
FRAMES=$(awk -v s="$SECONDS_WANTED" 'BEGIN { n = int(s * 25 + 0.5); if (n < 1) exit 1; print n }') || {
    echo "error: invalid duration '$SECONDS_WANTED'" >&2
    exit 2
}
case "$OUT" in
    *.wav) ENC=(wavenc) ;;
    *.flac) ENC=(flacenc) ;;
    *.ogg | *.opus) ENC=(audioresample ! opusenc ! oggmux) ;;
    *) echo "error: OUT must end in .wav, .flac, .ogg or .opus" >&2; exit 2 ;;
esac
MMAUDIO_PROMPT=$PROMPT
mmaudiogen_args
launch videotestsrc "num-buffers=$FRAMES" pattern=black \
    ! "video/x-raw,width=64,height=64,framerate=25/1" ! videoconvert \
    ! "${GEN[@]}" text-only=true \
    ! audioconvert ! "${ENC[@]}" ! filesink "location=$OUT"
