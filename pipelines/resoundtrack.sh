#!/usr/bin/env bash
# Batch re-soundtrack: generate a new soundtrack for a video file and mux it back with the
# original video, which is not re-encoded. Audio tracks of the input are dropped.
#
# Usage: resoundtrack.sh IN OUT.mp4|OUT.mkv|OUT.webm     (-h, --help: this text)
#
# The video elementary stream (H.264, H.265, VP8, VP9 or AV1) is split with a tee: one
# branch goes to the muxer as it is, the other is decoded for mmaudiogen. The new audio
# is AAC in .mp4, Opus in .mkv/.webm. The container must accept the input's video codec
# (.webm: VP8/VP9/AV1 only). Environment: see pipelines/common.sh (MMAUDIO_MODEL_DIR,
# MMAUDIO_PROMPT, ...).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

handle_usage 2 2 "$@"
IN=$1 OUT=$2
if [ ! -e "$IN" ] && [ "${MMAUDIO_DRY_RUN:-0}" = 0 ]; then
    echo "error: $IN does not exist" >&2
    exit 2
fi
have() { gst-inspect-1.0 "$1" >/dev/null 2>&1; }
case "$OUT" in
    *.mp4 | *.m4v | *.mov)
        MUX=mp4mux
        if have avenc_aac; then AENC=(avenc_aac); elif have fdkaacenc; then AENC=(fdkaacenc);
        else AENC=(voaacenc); fi ;;
    *.mkv) MUX=matroskamux AENC=(opusenc) ;;
    *.webm) MUX=webmmux AENC=(opusenc) ;;
    *) echo "error: OUT must end in .mp4, .mov, .mkv or .webm" >&2; exit 2 ;;
esac
mmaudiogen_args
scale_args
UNBOUNDED=(queue max-size-time=0 max-size-bytes=0 max-size-buffers=0)
launch filesrc "location=$IN" ! parsebin name=demux \
    demux. ! "video/x-h264;video/x-h265;video/x-vp8;video/x-vp9;video/x-av1" ! tee name=t \
    t. ! "${UNBOUNDED[@]}" ! mux.video_0 \
    t. ! "${UNBOUNDED[@]}" ! decodebin ! videoconvert ! "${SCALE[@]}" videoconvert \
    ! "${GEN[@]}" ! audioconvert ! audioresample ! "${AENC[@]}" ! queue ! mux.audio_0 \
    "$MUX" name=mux ! filesink "location=$OUT"
