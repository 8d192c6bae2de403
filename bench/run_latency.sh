#!/usr/bin/env bash
# All latency benchmarks (issue 4 and issue 2's grid table) under ONE hold of the machine's
# exclusive lock, so that no other benchmark shares the 2 vCPUs while they time. Resumable.
# Order: most needed first (a run cut short still leaves the grid table and the onnxruntime results).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=/tmp/dynasearch-cpu.lock
if [ -z "${DYNASEARCH_LOCK_HELD:-}" ]; then
  exec env DYNASEARCH_LOCK_HELD=1 flock "$LOCK" "$0" "$@"
fi
PY=.venv/bin/python
echo "== grid $(date -u +%H:%M:%S)"
"$PY" bench/grid_latency.py
for phase in peak single-ort repeat single-torch shapes; do
  echo "== $phase $(date -u +%H:%M:%S)"
  "$PY" bench/latency_measure.py "$phase"
done
echo "== report $(date -u +%H:%M:%S)"
"$PY" bench/latency_report.py
echo "== done $(date -u +%H:%M:%S)"
