#!/usr/bin/env bash
# The main job: set up, build the real image-caption and VQA datasets from Debian
# packages, train the nano model on both tasks on the CPU, evaluate, and print the result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
/usr/bin/python3 scripts/build_data.py stamps_caption --out data
/usr/bin/python3 scripts/build_data.py stamps_vqa --out data
exec build/bin/launch configs/caption_vqa.conf "$@"
