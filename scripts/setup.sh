#!/usr/bin/env bash
# Installs everything the build, the tests and the dataset builder need on a fresh
# Debian 12 machine, then configures and builds the project into build/.
# Safe to run again: apt-get skips what is installed, CMake rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake ninja-build pkg-config clang
  libzmq3-dev libmsgpack-dev libconfig-dev libturbojpeg0-dev libpng-dev libsndfile1-dev
  libavformat-dev libavcodec-dev libswscale-dev libswresample-dev libavutil-dev
  libcriterion-dev libopenblas-dev libopenblas0-pthread libfftw3-dev
  python3-pil python3-numpy python3-torch python3-torchvision python3-zmq python3-msgpack
  tuxpaint-stamps-default opencv-doc python3-skimage imagemagick chromium
  wordnet-base miscfiles slurmd slurmctld slurm-client munge
  espeak-ng asterisk-core-sounds-en asterisk-core-sounds-en-wav ffmpeg assimp-testmodels
  libopenmpi-dev openmpi-bin
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build
