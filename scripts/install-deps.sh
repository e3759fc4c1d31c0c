#!/usr/bin/env bash
# System packages gst-mmaudio needs on Debian/Ubuntu: GStreamer development files (to build)
# and the plugin sets the pipelines, `mmaudio generate` and the tests use (decoders, muxers,
# x264enc for test clips, avenc_aac for .mp4 soundtracks). Uses sudo when not root.
# Set MMAUDIO_SKIP_APT=1 to skip (packages installed some other way).
set -euo pipefail
[ "${MMAUDIO_SKIP_APT:-0}" = 1 ] && exit 0
packages=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-plugins-base-apps
  pkg-config gcc python3 python3-venv ca-certificates curl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install-deps: no apt-get; install GStreamer >= 1.22 with its development files and the" >&2
  echo "base/good/bad/ugly/libav plugin sets by other means, then set MMAUDIO_SKIP_APT=1" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
echo "install-deps: apt-get install ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
