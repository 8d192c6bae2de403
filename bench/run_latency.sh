#!/usr/bin/env bash
# All latency benchmarks (issue 4 and issue 2's grid table), each phase under the machine's
# exclusive lock so that no other benchmark shares the 2 vCPUs while it times. Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=/tmp/dynasearch-cpu.lock
PY=.venv/bin/python
for phase in peak single repeat shapes; do
  echo "== $phase $(date -u +%H:%M:%S)"
  flock "$LOCK" "$PY" bench/latency_measure.py "$phase"
done
echo "== grid $(date -u +%H:%M:%S)"
flock "$LOCK" "$PY" bench/grid_latency.py
echo "== report $(date -u +%H:%M:%S)"
"$PY" bench/latency_report.py
echo "== done $(date -u +%H:%M:%S)"
