#!/usr/bin/env bash
# Set-up plus the whole test suite except the GPU and long tests (what CI runs).
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Datasets the end-to-end tests train on are built from Debian packages (idempotent).
/usr/bin/python3 scripts/build_data.py stamps_caption --out data
/usr/bin/python3 scripts/build_data.py stamps_vqa --out data
ctest --test-dir build -LE 'gpu|long' --output-on-failure --timeout 900 "$@"
