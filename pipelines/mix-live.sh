#!/usr/bin/env bash
# Live mix: a camera and its microphone (or live test sources); the generated soundtrack
# is mixed under the live sound with audiomixer and played with the video, all in sync.
#
# Usage: mix-live.sh [--test | VIDEO_DEVICE [AUDIO_DEVICE]]
#        (defaults /dev/video0 and the default microphone; -h, --help: this text)
#
# The new soundtrack passes a volume element at MMAUDIO_MIX_GAIN_DB (default -6 dB) and
# meets the live sound in audiomixer. mmaudiogen reports its latency (window-duration +
# one frame + processing-latency, about 10 s with the defaults): the sinks delay
# everything by that much, so the live sound and the video wait in unbounded queues
# (latency times their rate: a few MB of audio, scaled-down video) until the soundtrack
# for the same instant is there. Shorter delay: MMAUDIO_WINDOW_MS=2000
# MMAUDIO_OVERLAP_MS=500 and a processing-latency the device can meet. More environment:
# VIDEO_SINK (autovideosink), AUDIO_SINK (autoaudiosink), NUM_BUFFERS (--test: stop after
# that many video frames), and pipelines/common.sh. `mmaudio generate --original-audio
# mix` does the same for files.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

handle_usage 0 2 "$@"
case "${1:-/dev/video0}" in
    --test)
        n=${NUM_BUFFERS:--1}
        # 25 fps video; 1920-sample buffers at 48 kHz = 25 per second, so both stop together
        VSRC=(videotestsrc is-live=true pattern=ball "num-buffers=$n"
              ! "video/x-raw,width=320,height=240,framerate=25/1")
        ASRC=(audiotestsrc is-live=true freq=440 volume=0.5 samplesperbuffer=1920 "num-buffers=$n"
              ! "audio/x-raw,rate=48000,channels=1") ;;
    *)
        VSRC=(v4l2src "device=${1:-/dev/video0}")
        if [ -n "${2:-}" ]; then ASRC=(alsasrc "device=$2"); else ASRC=(autoaudiosrc); fi ;;
esac
GAIN_DB=${MMAUDIO_MIX_GAIN_DB:--6}
GAIN=$(awk -v db="$GAIN_DB" 'BEGIN { if (db !~ /^-?[0-9.]+$/) exit 1; printf "%.6f", 10 ^ (db / 20) }') || {
    echo "error: MMAUDIO_MIX_GAIN_DB=$GAIN_DB is not a number of dB" >&2
    exit 2
}
read -r -a VSINK <<<"${VIDEO_SINK:-autovideosink}"
read -r -a ASINK <<<"${AUDIO_SINK:-autoaudiosink}"
mmaudiogen_args
scale_args
UNBOUNDED=(queue max-size-time=0 max-size-bytes=0 max-size-buffers=0)
MIXCAPS="audio/x-raw,format=F32LE,rate=48000,channels=2"
launch "${VSRC[@]}" ! tee name=t \
    t. ! "${UNBOUNDED[@]}" ! videoconvert ! "${VSINK[@]}" \
    t. ! "${UNBOUNDED[@]}" ! videoconvert ! "${SCALE[@]}" videoconvert \
    ! "${GEN[@]}" ! audioconvert ! audioresample ! "$MIXCAPS" ! volume "volume=$GAIN" ! mix. \
    "${ASRC[@]}" ! "${UNBOUNDED[@]}" ! audioconvert ! audioresample ! "$MIXCAPS" ! mix. \
    audiomixer name=mix ! audioconvert ! "${ASINK[@]}"
