#!/usr/bin/env bash
# Regenerates the built-in calibration of the theory panel: runs `benign boundary` on its
# default grid (d = 1e3..1e7, 5 log-spaced values; n = 10, 20, 50; 16 seeds; the law trainer
# with Gaussian W_0; lr held at lr sigma^2 d = 10, the paper's d = 2000 step), then copies its
# fit.json to assets/calibration/boundary-fit.json. About 20 minutes on 2 cores.
#
#   scripts/calibrate_boundaries.sh [OUT_DIR]   (default /tmp/benign-calibration; resumable)
#
# The measurement folder keeps boundaries.csv, thresholds.jsonl and boundary.svg/png; docs/boundary.md
# quotes them. Rebuild afterwards: the calibration is compiled into the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/benign-calibration}"
cargo build --release
target/release/benign boundary --out "$out"
cp "$out/fit.json" assets/calibration/boundary-fit.json
echo "assets/calibration/boundary-fit.json updated from $out/fit.json"
