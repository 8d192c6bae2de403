#!/usr/bin/env bash
# Issue 10's time target: `make demo` from a FRESH CLONE (install included) on this machine, alone.
# Clones the current commit to $WORK (default /tmp/dynasearch-demo-clone), runs `make demo` there
# (its install step, `make install-demo`, timed apart)
# under the machine's exclusive lock, and writes bench/results/demo.md (time of the install and of
# every demo step, the grid table, the predictor's error, the answer) via bench/demo_report.py.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=${WORK:-/tmp/dynasearch-demo-clone}
LOCK=/tmp/dynasearch-cpu.lock
rm -rf "$WORK"
git clone -q "$REPO" "$WORK"
COMMIT=$(git -C "$WORK" rev-parse --short HEAD)
cd "$WORK"
start=$(date +%s)
flock "$LOCK" bash -c '
  t0=$(date +%s); make install-demo >install.log 2>&1; t1=$(date +%s)
  echo "install_s=$((t1 - t0))" > timing.env; echo "install_cmd=make_install-demo" >> timing.env
  make demo 2>&1 | tee demo.log; rc=${PIPESTATUS[0]}; t2=$(date +%s)
  echo "demo_s=$((t2 - t1))" >> timing.env; echo "rc=$rc" >> timing.env'
echo "wall_s=$(( $(date +%s) - start ))" >> timing.env
cat timing.env
"$REPO/.venv/bin/python" "$REPO/bench/demo_report.py" --demo "$WORK/runs/demo" --timing "$WORK/timing.env" \
  --commit "$COMMIT" --out "$REPO/bench/results/demo.md"
