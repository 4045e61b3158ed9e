#!/usr/bin/env bash
# gpu_check.sh: every GPU check of the project in one call, for the lent GPU machine
# (DESIGN.md "The machines"): configure with CUDA for sm_90, build what the gpu tests
# need, and run every test labelled `gpu` (test_cuda_parity: each op and 3 training
# steps of the CUDA backend against the CPU reference, in fp32 and bf16, and the golden
# file's logits, gradients and decoder steps against PyTorch's).
#
# That machine lacks the Debian libraries the build needs (ZeroMQ, msgpack, libconfig,
# libjpeg-turbo, libpng, libsndfile and what they load). Fetch their .deb files here
# once, into the git-ignored .gpu/ folder, then name .gpu in the device tool's `carry`:
#
#   scripts/gpu_check.sh --fetch          # here: apt-get download + dpkg -x into .gpu/root
#   scripts/gpu_check.sh                  # there: build into build-cuda/ and run the tests
#
# Output: the build's errors, then CTest's output of every gpu test (the parity test
# prints one line per op and mode). Exit status: CTest's. Environment: JOBS (default:
# all cores), GPU_BUILD (default build-cuda), CUDA_ARCH (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS_DIR=.gpu
ROOT=$DEPS_DIR/root
LIB=$PWD/$ROOT/usr/lib/x86_64-linux-gnu
# The build's libraries and what they load (the recipe DESIGN.md gives, tried there).
PKGS=(libzmq5 libzmq3-dev libsodium23 libpgm-5.3-0 libnorm1 libbsd0 libmd0
      libmsgpackc2 libmsgpack-dev libconfig9 libconfig-dev libturbojpeg0 libturbojpeg0-dev
      libjpeg62-turbo libpng16-16 libpng-dev libsndfile1 libsndfile1-dev libflac12
      libvorbis0a libvorbisenc2 libogg0 libopus0 libmpg123-0 libmp3lame0)

if [ "${1:-}" = "--fetch" ]; then
  mkdir -p "$DEPS_DIR/debs" "$ROOT"
  (cd "$DEPS_DIR/debs" && apt-get download "${PKGS[@]}")
  for f in "$DEPS_DIR"/debs/*.deb; do dpkg -x "$f" "$ROOT"; done
  rm -rf "$DEPS_DIR/debs"   # the unpacked tree is what travels
  # ../shared does not travel: the golden file of the parity test goes along in .gpu/.
  mkdir -p "$DEPS_DIR/golden"
  cp ../shared/reference/encdec_golden.safetensors "$DEPS_DIR/golden/"
  du -sh "$DEPS_DIR"
  exit 0
fi

BUILD=${GPU_BUILD:-build-cuda}
JOBS=${JOBS:-$(nproc)}
ARCH=${CUDA_ARCH:-90}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

prefix=()
if [ -d "$ROOT/usr/include" ]; then
  prefix=(-DOFA_DEPS_PREFIX="$PWD/$ROOT")
  export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # pkg-config files of .deb packages name /usr: the prefix's copies are rewritten.
  for pc in "$LIB"/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|^prefix=/usr\$|prefix=$PWD/$ROOT/usr|" "$pc"
  done
fi
export PATH=/usr/local/cuda/bin:$PATH
[ -f "$DEPS_DIR/golden/encdec_golden.safetensors" ] &&
  export OFA_GOLDEN=$PWD/$DEPS_DIR/golden/encdec_golden.safetensors

t0=$(date +%s)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DOFA_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${prefix[@]}" > "$BUILD.configure.log" 2>&1 \
  || { tail -40 "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j "$JOBS" --target test_cuda_parity 2>&1 | grep -E "error|warning: " || true
[ -x "$BUILD/bin/test_cuda_parity" ] || { echo "gpu_check: the build failed"; exit 1; }
echo "gpu_check: configured and built in $(( $(date +%s) - t0 )) s"
cd "$BUILD"
ctest -L gpu --output-on-failure -V 2>&1 | grep -v "^[0-9]*: Test command"
exit "${PIPESTATUS[0]}"
