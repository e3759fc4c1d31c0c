#!/usr/bin/env bash
# Live preview: show a camera (or a live test pattern) and play the generated soundtrack
# in sync with it.
#
# Usage: live-preview.sh [--test | DEVICE]     (DEVICE defaults to /dev/video0;
#        -h, --help: this text)
#
# Both branches are delayed by the pipeline latency, which mmaudiogen reports as
# upstream + window-duration + one frame + processing-latency: with the defaults about
# 10 s. For a shorter delay use e.g. MMAUDIO_WINDOW_MS=2000 MMAUDIO_OVERLAP_MS=500 and a
# processing-latency the device can meet (windows that cannot be on time are skipped:
# silence, a QoS message, and a WARNING for the first).
# Queues: the generator's branch has a default queue (mmaudiogen takes each frame at
# once). The display branch's queue must hold the latency's worth of frames, since the
# video sink shows each frame that late: it is sized to latency + 1 s (time only; raw
# 320x240 RGB at 25 fps is ~58 MB per 10 s, a 720p camera ~700 MB: lower the latency or
# the display size for big cameras). A default queue there (1 s) would throttle the camera
# and make every window late.
# More environment: VIDEO_SINK (autovideosink), AUDIO_SINK (autoaudiosink),
# NUM_BUFFERS (--test only: stop after that many frames), and pipelines/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

handle_usage 0 1 "$@"
case "${1:-/dev/video0}" in
    --test) SRC=(videotestsrc is-live=true pattern=ball "num-buffers=${NUM_BUFFERS:--1}"
                 ! "video/x-raw,width=320,height=240,framerate=25/1") ;;
    *) SRC=(v4l2src "device=${1:-/dev/video0}") ;;
esac
read -r -a VSINK <<<"${VIDEO_SINK:-autovideosink}"
read -r -a ASINK <<<"${AUDIO_SINK:-autoaudiosink}"
mmaudiogen_args
scale_args
LATENCY_MS=$(( ${MMAUDIO_WINDOW_MS:-8000} + ${MMAUDIO_PROCESSING_LATENCY_MS:-2000} + 1000 ))
DISPLAY_QUEUE=(queue "max-size-time=${LATENCY_MS}000000" max-size-bytes=0 max-size-buffers=0)
launch "${SRC[@]}" ! tee name=t \
    t. ! "${DISPLAY_QUEUE[@]}" ! videoconvert ! "${VSINK[@]}" \
    t. ! queue ! videoconvert ! "${SCALE[@]}" videoconvert \
    ! "${GEN[@]}" ! audioconvert ! audioresample ! "${ASINK[@]}"
